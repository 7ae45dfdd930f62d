"""Service settings from ``SERVICE_*`` environment variables (CONVENTIONS section 7).

Every size that grows with the input has a bound here. The engine never reads settings: the API
passes it the numbers it needs.
"""

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Runtime configuration; each field is read from ``SERVICE_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    max_body_bytes: int = Field(64 * MIB, ge=1, description="Request body bytes.")
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


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
