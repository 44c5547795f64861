"""Integer compute kernels (numba), their instruction schedules per ISA, and C twins.

Importing this package registers every kernel in :mod:`mcusim.kernels.registry`.
"""

from . import (  # noqa: F401, E402  # noqa: F401, E402
    activations,
    conv2d,
    depthwise_conv2d,
    elementwise,
    fully_connected,
    pooling,
    quantize,
    reduce,
    shape_ops,
    softmax,
)
from .registry import KERNELS, KernelDef, kernel_for, register  # noqa: F401
