"""jacobian-service: tensor calculus over HTTP (Jacobians, chain rule, xcorr, descent)."""

__version__ = "0.1.0"
