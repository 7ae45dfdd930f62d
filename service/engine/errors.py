"""Domain errors of the engine.

The engine raises these and nothing HTTP-shaped; the API layer maps each class to a problem type
(``service/api/problems.py``). Messages name the operation and print the offending values.
"""

from dataclasses import dataclass
from typing import TypeVar


class EngineError(Exception):
    """Root of every error the engine raises on purpose.

    ``pointer``, when set, is the JSON pointer of the request member at fault (a program's node,
    a ``wrt`` name, an expression); the API reports it in the problem's ``errors``.
    """

    pointer: str | None = None


class ShapeError(EngineError):
    """Incompatible shapes: rank mismatch, vector length vs shape, channels, chain links, bounds."""


class ParameterError(EngineError):
    """A parameter outside its domain: stride, dilation, padding, learning rate, steps."""


class IndexOutOfRange(ShapeError):
    """A multi-index or flat index outside the tensor it addresses."""


class UnknownOperation(EngineError):
    """An operation name that the registry does not hold."""


class NonFiniteError(EngineError):
    """A computation produced NaN or infinity where a finite value is required."""


class DomainError(EngineError):
    """An input outside a function's domain, such as the log of a non-positive value."""


class LimitExceeded(EngineError):
    """Work or memory that would exceed a configured limit; raised before allocating.

    Parameters
    ----------
    quantity : str
        What was estimated, e.g. ``"tensor elements"`` or ``"COO non-zeros"``.
    estimate : int
        The estimated amount.
    limit : int
        The configured bound.
    hint : str, optional
        What the client can do instead.
    setting : str
        Name of the bound, as data: the service setting that configures it (``"max_coo_nnz"``
        for ``SERVICE_MAX_COO_NNZ``). It names the refusal in problems and metrics, whatever
        the wording of ``quantity``.
    """

    def __init__(
        self, quantity: str, estimate: int, limit: int, hint: str = "", *, setting: str
    ) -> None:
        self.quantity = quantity
        self.estimate = estimate
        self.limit = limit
        self.hint = hint
        self.setting = setting
        message = f"{quantity}: estimated {estimate} exceeds the limit {limit}"
        super().__init__(f"{message}; {hint}" if hint else message)


class Cancelled(EngineError):
    """A computation stopped at a checkpoint because its client went away."""


class DeadlineExceeded(EngineError):
    """A computation stopped at a checkpoint because its wall-clock deadline passed.

    Parameters
    ----------
    seconds : float
        The deadline, in seconds from the computation's start.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"the computation did not finish within its deadline of {seconds:g} s and was stopped"
        )


_Located = TypeVar("_Located", bound=EngineError)


@dataclass(frozen=True)
class Place:
    """Where in a program an error happened: an expression character or a graph node.

    Attributes
    ----------
    label : str
        Put before the message: ``"expression character 4 (sqrt)"``, ``"node 'r' (sqrt)"``.
    pointer : str or None
        JSON pointer of the operation in the request (``"/function/nodes/0"``).
    """

    label: str
    pointer: str | None = None

    def locate(self, error: _Located) -> _Located:
        """Return ``error`` again (same class) after the label, with the pointer.

        The caller raises the result ``from error``.
        """
        located = type(error)(f"{self.label}: {error}")
        located.pointer = self.pointer
        return located
