"""jacobian-service: tensor calculus over HTTP (Jacobians, chain rule, cross-correlation, descent)."""

__version__ = "0.1.0"
