"""The numeric core: pure NumPy/SciPy, no HTTP, no settings (limits arrive as arguments).

The public surface is the modules themselves, each owning one concern (see their docstrings):
``layout`` (index order), ``sparse`` (canonical COO and factors), ``errors``, ``xcorr``, ``op`` and
``ops`` (the operation registry), ``chain``, ``fdcheck``, ``descent``, and the request entry
points ``correlation``, ``functions`` and ``jacobian``.
"""

__all__ = [
    "chain",
    "correlation",
    "descent",
    "errors",
    "fdcheck",
    "functions",
    "jacobian",
    "layout",
    "op",
    "ops",
    "sparse",
    "xcorr",
]
