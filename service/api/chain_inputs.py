"""The inputs of ``/v1/chain-rule``: Jacobians as the service writes them, checked and aligned.

A Jacobian answer (``shape``, ``in_shape``, ``out_shape``, ``layout``, ``order``, ``nnz``,
``format``, ``encoding``) can be sent back unchanged. Every header field it carries must agree
with its matrix and with its neighbours in the chain; a disagreement is a 422 whose pointer names
the field and whose detail says how to fix it. Matrices in the other layout are transposed into
the request's layout (CONVENTIONS section 2).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from fastapi.exceptions import RequestValidationError

from ..codec.errors import CodecError
from ..codec.sparse import CooJacobianIn, DenseJacobianIn, decode_jacobian
from ..engine.jacobian import relaid
from ..engine.layout import size_of
from ..engine.types import FloatArray, Layout, Order


@dataclass(frozen=True)
class ChainInputs:
    """The decoded Jacobians in the request's layout and the index order they share."""

    matrices: list[sp.coo_array | FloatArray]
    order: Order


def _error(index: int, field: str, message: str, given: Any) -> dict[str, Any]:
    return {"type": "chain_input", "loc": ("jacobians", index, field), "msg": message,
            "input": given}  # fmt: skip


def _header_errors(
    index: int, jacobian: CooJacobianIn | DenseJacobianIn, matrix: Any, layout: Layout
) -> list[dict[str, Any]]:
    """Check one Jacobian's header against its matrix (in its own ``layout``)."""
    errors: list[dict[str, Any]] = []
    if isinstance(jacobian, DenseJacobianIn) and jacobian.shape is not None:
        if list(matrix.shape) != jacobian.shape:
            errors.append(_error(index, "shape", f"shape {jacobian.shape} is not the shape "
                                 f"{list(matrix.shape)} of data: fix it or omit shape",
                                 jacobian.shape))  # fmt: skip
    if jacobian.nnz is not None:
        if isinstance(jacobian, CooJacobianIn):
            # After validation row holds the decoded array, whatever its wire form.
            count, what = int(np.size(np.asarray(jacobian.row))), "entries given in row/col/data"
        else:
            count, what = int(np.count_nonzero(matrix)), "non-zero entries of data"
        if count != jacobian.nnz:
            errors.append(_error(index, "nnz", f"nnz is {jacobian.nnz} but there are {count} "
                                 f"{what}: fix nnz or omit it", jacobian.nnz))  # fmt: skip
    rows, cols = matrix.shape
    sides = {"in_shape": rows, "out_shape": cols}
    if layout == "out_in":
        sides = {"in_shape": cols, "out_shape": rows}
    for field, size in sides.items():
        label = getattr(jacobian, field)
        if label is not None and size_of(tuple(label)) != size:
            side = "rows" if (field == "in_shape") == (layout == "in_out") else "columns"
            errors.append(_error(index, field, f"{field} {label} has {size_of(tuple(label))} "
                                 f"elements but the matrix has {size} {side} in layout "
                                 f"{layout!r}: fix {field} or the layout", label))  # fmt: skip
    return errors


def chain_inputs(
    jacobians: list[CooJacobianIn | DenseJacobianIn],
    layout: Layout,
    order: Order | None,
) -> ChainInputs:
    """Decode, check and align the Jacobians of a chain-rule request.

    Parameters
    ----------
    jacobians : list of CooJacobianIn or DenseJacobianIn
        J_1, ..., J_n of the functions applied first to last.
    layout : {"in_out", "out_in"}
        The request's layout: the default of inputs without their own, and the product's.
    order : {"F", "C"} or None
        The request's index order if it stated one.

    Returns
    -------
    ChainInputs
        Matrices in ``layout``; the index order (the request's, else the inputs', else "F").

    Raises
    ------
    RequestValidationError
        With one error per inconsistent field (pointer ``/jacobians/<i>/<field>``).
    """
    errors: list[dict[str, Any]] = []
    matrices: list[sp.coo_array | FloatArray] = []
    for index, jacobian in enumerate(jacobians):
        own = jacobian.layout or layout
        try:
            matrix = decode_jacobian(jacobian)
        except CodecError as error:
            # A matrix that cannot be read has no header to check: point at what is wrong with it.
            # A dense matrix is wrong in its data; a COO one in how row, col and data agree.
            where: tuple[Any, ...] = ("jacobians", index)
            if isinstance(jacobian, DenseJacobianIn):
                where += ("data",)
            errors.append({"type": "chain_input", "loc": where, "msg": str(error)})
            continue
        errors += _header_errors(index, jacobian, matrix, own)
        matrices.append(relaid(matrix, own, layout))
    stated = [(index, j.order) for index, j in enumerate(jacobians) if j.order is not None]
    agreed = order or (stated[0][1] if stated else "F")
    source = (
        "the request's order" if order else f"jacobians[{stated[0][0]}].order" if stated else ""
    )
    for index, given in stated:
        if given != agreed:
            errors.append(_error(index, "order", f"order {given!r} differs from {source} "
                                 f"{agreed!r}: every Jacobian of a chain must use one index "
                                 "order (recompute it in that order)", given))  # fmt: skip
    for index in range(1, len(jacobians)):
        before, after = jacobians[index - 1].out_shape, jacobians[index].in_shape
        if before is not None and after is not None and before != after:
            errors.append(_error(index, "in_shape", f"in_shape {after} differs from "
                                 f"jacobians[{index - 1}].out_shape {before}: the output of "
                                 f"function {index - 1} is the input of function {index}; fix "
                                 "the labels or omit them", after))  # fmt: skip
    if errors:
        raise RequestValidationError(errors)
    return ChainInputs(matrices, agreed)
