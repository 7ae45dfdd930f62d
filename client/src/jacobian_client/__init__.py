"""A NumPy-native client of jacobian-service, and the ``jacobian`` command.

::

    import numpy as np
    from jacobian_client import Client

    with Client("http://127.0.0.1:8000") as client:
        J = client.jacobian(["tanh", "sum"], x=np.linspace(0, 1, 5))   # a scipy.sparse.coo_array
        print(J.as_tensor())                                            # shape (*out, *in), as JAX

Methods map one to one onto endpoints (``vec`` → ``POST /v1/vec``, ``jacobian`` →
``POST /v1/jacobian``, ...). Non-2xx answers raise :class:`ProblemError` subclasses.
"""

from .client import DEFAULT_ENCODING, AsyncClient, Client
from .errors import (
    AuthenticationError,
    ClientProblemError,
    LimitExceededError,
    ProblemError,
    ServerProblemError,
    UnavailableError,
    ValidationProblemError,
)
from .functions import op
from .results import (
    CooJacobian,
    CrossCorrelation,
    DenseJacobian,
    DescentRecord,
    DescentResult,
    JacobianMeta,
    JvpResult,
    VjpResult,
)
from .second_order import HvpResult
from .transport import AsyncDescentStream, DescentStream, RetryPolicy

__all__ = [
    "DEFAULT_ENCODING",
    "AsyncClient",
    "AsyncDescentStream",
    "AuthenticationError",
    "Client",
    "ClientProblemError",
    "CooJacobian",
    "CrossCorrelation",
    "DenseJacobian",
    "DescentRecord",
    "DescentResult",
    "DescentStream",
    "HvpResult",
    "JacobianMeta",
    "JvpResult",
    "LimitExceededError",
    "ProblemError",
    "RetryPolicy",
    "ServerProblemError",
    "UnavailableError",
    "ValidationProblemError",
    "VjpResult",
    "op",
]
