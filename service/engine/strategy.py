"""Which way a Jacobian is computed, chosen from shapes alone before anything is allocated.

Shared by op lists (:meth:`service.engine.chain.Chain.plan`) and programs
(``graph.strategies.plan``): the strategy names, the costs' weights and block size, the plan a
request gets, and the choice among the strategies within the limits.
"""

from dataclasses import dataclass
from typing import Literal, get_args

from .errors import LimitExceeded

__all__ = [
    "BLOCK_ELEMENTS",
    "NNZ_HINT",
    "SPARSE_COST",
    "STRATEGIES",
    "ComputedBy",
    "JacobianPlan",
    "Strategy",
    "choose_strategy",
]

Strategy = Literal["auto", "chain", "reverse", "forward"]
ComputedBy = Literal["chain", "reverse", "forward"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
# Tie-break order of "auto": the sparse product first, it never visits structural zeros.
_PREFERENCE: tuple[ComputedBy, ...] = ("chain", "reverse", "forward")

# Float64 elements in one block of basis vectors and its images (16 MiB): the forward and reverse
# strategies push the basis through in blocks of this size, so their memory stays bounded.
BLOCK_ELEMENTS = 1 << 21
# One sparse multiply-add in SciPy (index chasing, scattered writes) costs about this many dense
# element operations in NumPy; it weights the "chain" estimate against "forward"/"reverse".
# Measured on the 2-core machines over six chain shapes (xcorr, pooling, linear, softmax): the
# sparse product ran at 1.3-9.5 ns per estimated unit, the batched basis passes at 0.3-6 ns.
SPARSE_COST = 8

NNZ_HINT = "use /v1/jvp or /v1/vjp"
_WORK_HINT = "strategies 'forward' and 'reverse' visit every entry; use strategy 'chain' or 'auto'"


@dataclass(frozen=True)
class JacobianPlan:
    """How a Jacobian would be computed, decided from shapes alone, before any allocation.

    Attributes
    ----------
    strategy : {"chain", "reverse", "forward"}
        The strategy chosen (``"auto"`` resolved) or asked for.
    costs : dict of str to int
        Estimated cost of each strategy, in dense element operations.
    nnz_bound : int
        Upper bound on the non-zeros of the Jacobian.
    chain_peak_nnz : int
        Upper bound on the largest matrix the ``"chain"`` strategy holds (a local Jacobian or a
        partial product), for its association order.
    dense_elements : int
        ``in_size * out_size``.
    """

    strategy: ComputedBy
    costs: dict[str, int]
    nnz_bound: int
    chain_peak_nnz: int
    dense_elements: int


def choose_strategy(
    strategy: Strategy,
    costs: dict[str, int],
    peak: int,
    max_nnz: int,
    dense_elements: int,
    max_dense_elements: int,
) -> ComputedBy:
    """Resolve ``strategy`` from estimated costs, or refuse it, before anything is allocated.

    ``chain`` is admissible when its largest matrix bound ``peak <= max_nnz``; ``forward`` and
    ``reverse`` when the entries they visit, ``dense_elements``, are ``<= max_dense_elements``.
    ``auto`` takes the cheapest admissible one, ties going to chain, then reverse, then forward.
    Shared by op lists (:meth:`Chain.plan`) and programs (``graph.strategies.plan``).

    Raises
    ------
    LimitExceeded
        If the strategy asked for, or every strategy for ``auto``, is over a limit.
    """
    admissible = {
        "chain": peak <= max_nnz,
        "reverse": dense_elements <= max_dense_elements,
        "forward": dense_elements <= max_dense_elements,
    }
    if strategy == "auto":
        candidates = [s for s in _PREFERENCE if admissible[s]]
        if not candidates:
            raise LimitExceeded(
                "non-zeros of a chain-rule product (upper bound)", peak, max_nnz, NNZ_HINT,
                setting="max_coo_nnz",
            )  # fmt: skip
        return min(candidates, key=costs.__getitem__)
    if not admissible[strategy]:
        if strategy == "chain":
            raise LimitExceeded(
                "non-zeros of a chain-rule product (upper bound)",
                peak,
                max_nnz,
                hint="use strategy 'auto', or /v1/jvp or /v1/vjp",
                setting="max_coo_nnz",
            )
        raise LimitExceeded(
            f"Jacobian entries visited by strategy '{strategy}'",
            dense_elements,
            max_dense_elements,
            hint=_WORK_HINT,
            setting="max_dense_jacobian_elements",
        )
    return strategy
