#!/usr/bin/env bash
# The main job: what this machine offers, the verified matrix, then every notebook, executed.
# With a GPU and SGLang the notebooks launch the verified SGLang cells; without, the CPU engine
# serving the project's fixtures. Executed notebooks and summary.json land in runs/latest/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh main
if ! .venv/bin/python -c "import sglang" 2>/dev/null; then
  bash ci/setup.sh cpu-engine  # no SGLang here: the notebooks run on the CPU engine
fi
cookbook=.venv/bin/cookbook
$cookbook doctor
echo
$cookbook matrix
echo
exec $cookbook run --out runs/latest "$@"
