#!/usr/bin/env bash
# Install the package (non-editable) into .venv and run it: `python -m service`.
# Configuration comes from SERVICE_* environment variables, which are passed through, e.g.
#   SERVICE_PORT=9000 SERVICE_WORKERS=2 bash scripts/serve.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    python3 -m venv .venv
fi

.venv/bin/python -m pip install --quiet .

exec .venv/bin/python -m service
