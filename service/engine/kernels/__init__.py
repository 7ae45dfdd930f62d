"""Numeric kernels too large for one module, one package per kernel (see each package)."""
