"""jacobian-service: tensor calculus over HTTP (Jacobians, chain rule, xcorr, descent)."""

from .blas import pin_kernels

# Before any module of the service imports NumPy, whose OpenBLAS reads the choice when it loads.
pin_kernels()

__version__ = "0.1.0"
