#!/usr/bin/env bash
# The whole test suite: set-up, lint, format check, tests. Extra arguments go to pytest.
#   ci/test.sh --fast   only .venv and the tests that start no engine, run no notebook, open no
#                       browser and make no environment (markers: pyproject.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --fast ]; then
  shift
  # Two workers: these tests share nothing (each makes its own files, ports and fakes).
  set -- -m "not engine and not notebooks and not browser and not setup" -n 2 "$@"
  bash ci/setup.sh main
else
  bash ci/setup.sh all
fi
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] ruff format --check"
.venv/bin/ruff format --check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
