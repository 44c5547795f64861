"""Integer compute kernels (numba), their instruction schedules per ISA, and C twins.

Importing this package registers every kernel in :mod:`mcusim.kernels.registry`.
"""

from .registry import KERNELS, KernelDef, kernel_for, register  # noqa: F401
