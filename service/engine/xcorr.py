"""Cross-correlation, the seed notes' example: the engine's stable import path.

The arithmetic lives in :mod:`service.engine.kernels.xcorr` (geometry, forward, Jacobians,
transposes, one module each); this module is its public surface, so callers write
``from service.engine import xcorr`` and never depend on how the kernels are split.
"""

from .kernels.xcorr import *  # noqa: F403
from .kernels.xcorr import __all__ as __all__
