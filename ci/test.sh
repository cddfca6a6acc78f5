#!/usr/bin/env bash
# The whole test suite: set-up, lint, format check, tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh all
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] ruff format --check"
.venv/bin/ruff format --check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
