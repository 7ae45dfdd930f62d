"""The n-ary operations, one module per family; importing the package registers them."""

from . import broadcast, linalg, structure

__all__ = ["broadcast", "linalg", "structure"]
