"""Jacobian objects: as_tensor against the CONVENTIONS index formulas, COO without SciPy."""

import itertools
import math

import numpy as np
import pytest
from jacobian_client.results import (
    HAVE_SCIPY,
    CooJacobian,
    DenseJacobian,
    JacobianMeta,
    decode_jacobian,
)


def flat(index: tuple[int, ...], dims: tuple[int, ...], order: str) -> int:
    # CONVENTIONS section 1, literally: F weights prod_{k<j} d_k, C weights prod_{k>j} d_k.
    weights = [
        math.prod(dims[:j]) if order == "F" else math.prod(dims[j + 1 :]) for j in range(len(dims))
    ]
    return sum(i * w for i, w in zip(index, weights, strict=True))


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_as_tensor_puts_every_entry_at_out_index_in_index(order: str, layout: str) -> None:
    in_shape, out_shape = (2, 3), (2, 1, 2)
    rng = np.random.default_rng(0)
    tensor = rng.normal(size=(*out_shape, *in_shape))  # T[o, i] = d f_o / d x_i
    size_in, size_out = math.prod(in_shape), math.prod(out_shape)
    matrix = np.zeros((size_in, size_out) if layout == "in_out" else (size_out, size_in))
    for o in itertools.product(*map(range, out_shape)):
        for i in itertools.product(*map(range, in_shape)):
            r, c = flat(i, in_shape, order), flat(o, out_shape, order)
            matrix[(r, c) if layout == "in_out" else (c, r)] = tensor[(*o, *i)]
    meta = JacobianMeta(in_shape, out_shape, layout, order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(DenseJacobian(matrix, meta).as_tensor(), tensor)
    nz = np.nonzero(matrix)
    coo = CooJacobian(nz[0], nz[1], matrix[nz], matrix.shape, meta)  # type: ignore[arg-type]
    np.testing.assert_array_equal(coo.as_tensor(), tensor)
    np.testing.assert_array_equal(coo.toarray(), matrix)


def test_coo_wire_object_becomes_a_labelled_sparse_matrix() -> None:
    wire = {
        "format": "coo",
        "shape": [3, 2],
        "in_shape": [3],
        "out_shape": [2],
        "layout": "in_out",
        "order": "F",
        "nnz": 2,
        "encoding": "list",
        "row": [0, 2],
        "col": [1, 0],
        "data": [4.0, -1.0],
    }
    jac = decode_jacobian(wire)
    # With SciPy: a scipy.sparse.coo_array subclass; without: the light CooJacobian.
    assert type(jac).__name__ == ("SparseJacobian" if HAVE_SCIPY else "CooJacobian")
    assert (jac.in_shape, jac.out_shape, jac.layout, jac.order) == ((3,), (2,), "in_out", "F")
    np.testing.assert_array_equal(jac.toarray(), [[0, 4], [0, 0], [-1, 0]])
    if HAVE_SCIPY:
        import scipy.sparse as sp

        assert isinstance(jac, sp.coo_array)


def test_dense_jacobian_keeps_its_labels_and_is_an_ndarray() -> None:
    wire = {
        "format": "dense",
        "shape": [1, 2],
        "in_shape": [1],
        "out_shape": [2],
        "layout": "in_out",
        "order": "C",
        "nnz": 2,
        "data": {"encoding": "list", "shape": [1, 2], "data": [[1.0, 2.0]]},
    }
    jac = decode_jacobian(wire, strategy="chain")
    assert isinstance(jac, np.ndarray) and jac.meta.strategy == "chain"
    assert jac.as_tensor().shape == (2, 1) and jac.order == "C"
