#!/usr/bin/env bash
# Set up the system packages and .venv (editable install with the dev extra), then: ruff check,
# ruff format --check, mypy, pytest.
# Stops at the first failing step and exits with its status. Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    python3 -m venv .venv
fi

bash scripts/system-deps.sh

echo "==> pip install -e '.[dev]'"
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "==> ruff check . && ruff format --check ."
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "==> mypy (strict, packages from pyproject.toml)"
.venv/bin/mypy

echo "==> pytest"
rc=0
.venv/bin/python -m pytest -p no:cacheprovider "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests (exit 5): treating as failure" >&2
fi
exit "$rc"
