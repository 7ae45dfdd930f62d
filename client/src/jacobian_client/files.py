"""Reading arrays from, and writing results to, .npy, .npz and .json files (the CLI's I/O).

A sparse Jacobian is written to ``.npz`` exactly as ``scipy.sparse.save_npz`` writes a
``coo_array`` (keys ``row``, ``col``, ``data``, ``shape``, ``format``, ``_is_array``), so
``scipy.sparse.load_npz`` reads it, plus ``in_shape``, ``out_shape``, ``layout`` and ``order``
(which ``load_npz`` ignores). A dense Jacobian goes to ``.npz`` as ``jacobian`` with the same four
labels, or to ``.npy`` as the bare matrix. No SciPy is needed for any of this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .results import DenseJacobian, JacobianMeta


class FileFormatError(ValueError):
    """A file cannot be read as an array, or a result cannot be written in that format."""


def load_array(path: str | Path, name: str | None = None) -> npt.NDArray[Any]:
    """Read an array from ``.npy``, ``.npz`` (key ``name``, or its only array) or ``.json``.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        The key to read from an ``.npz`` holding several arrays.

    Returns
    -------
    ndarray
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if name is not None and name in keys:
                return np.asarray(archive[name])
            if len(keys) == 1:
                return np.asarray(archive[keys[0]])
            raise FileFormatError(f"{path} holds {keys}; name one of them as NAME=FILE")
    if suffix == ".json":
        return np.asarray(json.loads(path.read_text()), dtype=np.float64)
    raise FileFormatError(f"{path}: expected a .npy, .npz or .json file")


def parse_value(text: str, name: str | None = None) -> npt.NDArray[Any]:
    """Read ``text`` as a file path, or else as a JSON number or nested list."""
    if Path(text).suffix.lower() in {".npy", ".npz", ".json"}:
        return load_array(text, name)
    try:
        return np.asarray(json.loads(text), dtype=np.float64)
    except (ValueError, TypeError):
        raise FileFormatError(
            f"{text!r} is neither a .npy/.npz/.json file nor a JSON number or list"
        ) from None


def _labels(meta: JacobianMeta) -> dict[str, Any]:
    return {
        "in_shape": np.asarray(meta.in_shape, dtype=np.int64),
        "out_shape": np.asarray(meta.out_shape, dtype=np.int64),
        "layout": np.asarray(meta.layout),
        "order": np.asarray(meta.order),
    }


def is_jacobian(result: Any) -> bool:
    """Whether ``result`` is a Jacobian returned by the client (dense or sparse)."""
    return isinstance(getattr(result, "meta", None), JacobianMeta)


def _sparse(result: Any) -> bool:
    return is_jacobian(result) and not isinstance(result, DenseJacobian)


def to_json(result: Any) -> Any:
    """Return a JSON-able form of an array, a Jacobian, a dict of them, or a plain value."""
    if isinstance(result, dict):
        return {key: to_json(value) for key, value in result.items()}
    if is_jacobian(result):
        meta: JacobianMeta = result.meta
        header = {
            "shape": list(result.shape),
            "in_shape": list(meta.in_shape),
            "out_shape": list(meta.out_shape),
            "layout": meta.layout,
            "order": meta.order,
        }
        if isinstance(result, DenseJacobian):
            return {"format": "dense", **header, "data": np.asarray(result).tolist()}
        return {
            "format": "coo",
            **header,
            "row": np.asarray(result.row).tolist(),
            "col": np.asarray(result.col).tolist(),
            "data": np.asarray(result.data).tolist(),
        }
    if isinstance(result, np.ndarray | np.generic):
        return np.asarray(result).tolist()
    return result


def save_result(path: str | Path, result: Any, name: str = "value") -> None:
    """Write ``result`` to ``path``; the suffix chooses the format.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (one dense array or dense Jacobian), ``.npz`` (sparse Jacobians in SciPy's
        format, dense ones as ``jacobian``, arrays under ``name``, dicts of arrays by key) or
        ``.json``.
    result : ndarray, Jacobian, or dict of str to ndarray
    name : str
        The key of a plain array in an ``.npz``.

    Raises
    ------
    FileFormatError
        For a sparse Jacobian or a dict in ``.npy``, or an unknown suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(to_json(result)) + "\n")
    elif suffix == ".npy":
        if _sparse(result) or isinstance(result, dict):
            raise FileFormatError(f"{path}: .npy holds one dense array; use .npz")
        np.save(path, np.asarray(result))
    elif suffix == ".npz":
        np.savez(path, **_npz_members(result, name))
    else:
        raise FileFormatError(f"{path}: write .npy, .npz or .json")


def _npz_members(result: Any, name: str) -> dict[str, Any]:
    if isinstance(result, dict):
        return {key: np.asarray(value) for key, value in result.items()}
    if isinstance(result, DenseJacobian):
        return {"jacobian": np.asarray(result), **_labels(result.meta)}
    if _sparse(result):
        # CooJacobian and SparseJacobian both have row, col, data, shape and meta.
        return {
            "row": np.asarray(result.row),
            "col": np.asarray(result.col),
            "format": b"coo",
            "shape": np.asarray(result.shape),
            "data": np.asarray(result.data),
            "_is_array": True,
            **_labels(result.meta),
        }
    return {name: np.asarray(result)}
