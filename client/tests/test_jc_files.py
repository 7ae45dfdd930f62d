"""Files the CLI reads and writes: .npy, .npz in scipy.sparse.save_npz's layout, .json."""

import json
from pathlib import Path

import numpy as np
import pytest
from jacobian_client.files import FileFormatError, load_array, parse_value, save_result
from jacobian_client.results import HAVE_SCIPY, CooJacobian, DenseJacobian, JacobianMeta

META = JacobianMeta((3,), (2,), "in_out", "F")


def test_a_sparse_jacobian_npz_has_save_npz_keys_and_the_labels(tmp_path: Path) -> None:
    coo = CooJacobian(np.array([0, 2]), np.array([1, 0]), np.array([4.0, -1.0]), (3, 2), META)
    save_result(tmp_path / "J.npz", coo)
    with np.load(tmp_path / "J.npz") as npz:
        # The members scipy.sparse.save_npz writes for a 2-D coo_array.
        assert npz["format"].item() == b"coo" and bool(npz["_is_array"])
        assert npz["row"].tolist() == [0, 2] and npz["col"].tolist() == [1, 0]
        assert npz["shape"].tolist() == [3, 2] and npz["data"].tolist() == [4.0, -1.0]
        assert npz["in_shape"].tolist() == [3] and str(npz["layout"]) == "in_out"
    if HAVE_SCIPY:
        import scipy.sparse as sp

        loaded = sp.load_npz(tmp_path / "J.npz")
        np.testing.assert_array_equal(loaded.toarray(), coo.toarray())
    with pytest.raises(FileFormatError, match="use .npz"):
        save_result(tmp_path / "J.npy", coo)


def test_dense_arrays_and_jacobians_round_trip(tmp_path: Path) -> None:
    dense = DenseJacobian(np.arange(6.0).reshape(3, 2), META)
    save_result(tmp_path / "D.npz", dense)
    with np.load(tmp_path / "D.npz") as npz:
        np.testing.assert_array_equal(npz["jacobian"], dense)
        assert str(npz["order"]) == "F"
    save_result(tmp_path / "D.npy", dense)
    np.testing.assert_array_equal(np.load(tmp_path / "D.npy"), dense)
    save_result(tmp_path / "D.json", dense)
    assert json.loads((tmp_path / "D.json").read_text())["data"] == [[0, 1], [2, 3], [4, 5]]


def test_inputs_come_from_npy_npz_json_or_a_literal(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.eye(2))
    np.savez(tmp_path / "b.npz", x=np.ones(3), k=np.zeros(2))
    (tmp_path / "c.json").write_text("[[1, 2]]")
    assert load_array(tmp_path / "a.npy").shape == (2, 2)
    assert load_array(tmp_path / "b.npz", "k").tolist() == [0.0, 0.0]
    with pytest.raises(FileFormatError, match="name one of them"):
        load_array(tmp_path / "b.npz", "y")
    assert parse_value(str(tmp_path / "c.json")).tolist() == [[1.0, 2.0]]
    assert parse_value("[1, 2.5]").tolist() == [1.0, 2.5]
    with pytest.raises(FileFormatError):
        parse_value("x.txt")
