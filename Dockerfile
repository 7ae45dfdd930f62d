# syntax=docker/dockerfile:1
# jacobian-service container image.
#
# Two stages on the same base: the builder installs the runtime dependencies and the package
# into a virtualenv at /opt/venv, the runtime stage copies only that venv (no compilers, no
# source tree, no pip cache) and runs it as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# Dependency layer: only the project metadata plus an empty stub package, so this layer (the
# slow one: numpy, scipy, uvicorn[standard], ...) is rebuilt only when pyproject.toml changes.
# The stub is uninstalled again so that only the dependencies stay in this layer. (hadolint's
# DL3013 pin rule does not apply: the argument is the local project path, not a package name.)
COPY pyproject.toml README.md ./
RUN mkdir -p service && touch service/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes jacobian-service

# Code layer: the real package, installed non-editable without touching the dependencies.
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && python -P -c "import service.__main__"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="jacobian-service" \
      org.opencontainers.image.description="REST microservice for tensor calculus"

# `python -m service` reads these (service/config.py): uvicorn binds SERVICE_HOST:SERVICE_PORT
# and forks SERVICE_WORKERS worker processes. One worker by default: scale with container
# replicas (docker-compose.yml), so each container's /metrics covers its whole process; override
# with `-e SERVICE_WORKERS=4` for a single big container (/metrics then adds up every worker).
# MALLOC_ARENA_MAX=2: glibc keeps freed memory per arena; two arenas (instead of 8 per core) let
# the service's malloc_trim after large requests give it back (README, Operations).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=8000 \
    SERVICE_WORKERS=1 \
    SERVICE_LOG_LEVEL=info \
    MALLOC_ARENA_MAX=2

RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Numeric uid:gid so runtimes that enforce runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

EXPOSE 8000

# No curl in the slim image: probe with the standard library. urlopen raises (exit 1) on any
# connection error or non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('SERVICE_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["python", "-m", "service"]
