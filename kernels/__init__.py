"""Integer compute kernels (numba), their instruction schedules per ISA, and C twins.

Importing this package registers every kernel in :mod:`mcusim.kernels.registry`.
"""

from .registry import KERNELS, KernelDef, kernel_for, register  # noqa: F401
from . import conv2d, depthwise_conv2d, fully_connected, pooling  # noqa: F401, E402
from . import activations, elementwise, quantize, reduce, shape_ops, softmax  # noqa: F401, E402
