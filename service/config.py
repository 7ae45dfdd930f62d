"""Service settings from ``SERVICE_*`` environment variables (CONVENTIONS section 7).

Every size that grows with the input has a bound here. The engine never reads settings: the API
passes it the numbers it needs.
"""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
GIB = 1024 * MIB


class Settings(BaseSettings):
    """Runtime configuration; each field is read from ``SERVICE_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log_every: int = Field(
        1,
        ge=1,
        description="Write the access-log line of one successful request in N; refused or "
        "failed requests (status >= 400) are always logged.",
    )

    max_body_bytes: int = Field(64 * MIB, ge=1, description="Request body bytes.")
    max_inflight_body_bytes: int = Field(
        256 * MIB, ge=1, description="Body bytes held by all requests of one process at once."
    )
    body_read_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest pause while a request body is being received."
    )
    min_body_rate_bytes_per_second: float = Field(
        1024.0,
        ge=0,
        description="Slowest average rate a request body may arrive at, after the grace window "
        "(408); 0 turns the check off. The pause timeout alone lets a client send 1 byte per "
        "pause forever.",
    )
    body_rate_window_seconds: float = Field(
        10.0, gt=0, description="Grace time before the minimum body rate applies."
    )
    max_tensor_elements: int = Field(
        16_000_000, ge=1, description="Elements of any one tensor, received or returned."
    )
    max_rank: int = Field(8, ge=0, le=32, description="Rank of any one tensor.")
    max_index_count: int = Field(1_000_000, ge=1, description="Indices per flat/unflat request.")
    max_dense_jacobian_elements: int = Field(
        25_000_000, ge=1, description="Elements of a dense Jacobian (8 bytes each)."
    )
    max_coo_nnz: int = Field(50_000_000, ge=1, description="Non-zeros of a COO Jacobian.")
    max_descent_steps: int = Field(100_000, ge=1, description="Gradient-descent steps.")
    max_trajectory_elements: int = Field(
        10_000_000, ge=1, description="Recorded trajectory points times their size."
    )
    descent_deadline_seconds: float = Field(
        60.0, gt=0, description="Wall-clock budget of one gradient-descent run."
    )
    max_work: int = Field(
        10_000_000_000,
        ge=1,
        description="Estimated work of one request: floating-point operations plus bytes "
        "touched, from shapes alone, before any arithmetic (about 10 s of one core at most).",
    )
    max_request_memory_bytes: int = Field(
        GIB,
        ge=1,
        description="Estimated peak transient memory of one request: parsed body, workspaces "
        "(padded images, index grids, sparse products) and the response's Python objects.",
    )
    max_response_bytes: int = Field(
        256 * MIB,
        ge=1,
        description="Estimated bytes of one response body, checked before computing.",
    )
    max_body_strings: int = Field(
        10_000,
        ge=1,
        description="JSON strings in one request body, counted in the raw bytes before parsing "
        "(each invalid one costs a validation error).",
    )
    computation_deadline_seconds: float = Field(
        30.0,
        gt=0,
        description="Wall-clock budget of every computation; a computation past it stops at "
        "its next checkpoint (504). Gradient descent ends with status 'deadline' instead.",
    )

    max_concurrent_computations: int = Field(
        4, ge=1, description="Engine computations running at once per worker process."
    )
    computation_wait_seconds: float = Field(
        2.0, ge=0, description="How long a request waits for a computation slot before 503."
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; empty disables authentication.",
    )
    public_health: bool = Field(True, description="Serve /healthz and /readyz without a key.")
    public_metrics: bool = Field(True, description="Serve /metrics without a key.")
    public_docs: bool = Field(True, description="Serve /docs, /redoc, /openapi.json without a key.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # SERVICE_API_KEYS="key1,key2": a plain list in the environment, not JSON.
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
