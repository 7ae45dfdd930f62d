"""Imported first by the benchmarks that run the engine in-process, before NumPy.

The service chooses OpenBLAS's kernels when it is imported (``service/blas.py``: the Haswell
kernels on every x86-64 host with AVX2 and FMA), and OpenBLAS reads that choice once, when NumPy
loads it. A benchmark that imported NumPy first would time other kernels than the service runs.
"""

import sys
from pathlib import Path

# The benchmarks run from any working directory, with or without the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import service  # noqa: E402, F401
