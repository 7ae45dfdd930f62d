"""jacobian-service: tensor calculus over HTTP (Jacobians, chain rule, xcorr, descent)."""

from .blas import pin_kernels, pin_threads

# Before any module of the service imports NumPy, whose OpenBLAS reads the choices when it loads.
pin_kernels()
pin_threads()

__version__ = "0.1.0"
