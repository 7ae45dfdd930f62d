#!/usr/bin/env bash
# Install the package (non-editable) into .venv-serve and run it: `python -m service`.
# .venv-serve is this script's own environment; scripts/test.sh keeps .venv (editable, with the
# dev tools), so serving and testing never reinstall each other's packages.
# Configuration comes from SERVICE_* environment variables, which are passed through, e.g.
#   SERVICE_PORT=9000 SERVICE_WORKERS=2 bash scripts/serve.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-serve
if [[ ! -x $venv/bin/python ]]; then
    echo "==> creating $venv (Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
    python3 -m venv "$venv"
fi

echo "==> pip install . into $venv (the first run downloads NumPy, SciPy, FastAPI, uvicorn: a few minutes)"
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar on .

echo "==> python -m service on ${SERVICE_HOST:-127.0.0.1}:${SERVICE_PORT:-8000} (Ctrl-C stops it)"
exec "$venv/bin/python" -m service
