"""Array and shape aliases shared by the engine."""

from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.int64]
Shape = tuple[int, ...]
Order = Literal["F", "C"]
Layout = Literal["in_out", "out_in"]
