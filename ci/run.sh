#!/usr/bin/env bash
# The main job: set-up for this machine, what it offers, the verified matrix, then every notebook,
# executed. Set-up installs SGLang (.venvs/sglang) on every machine: with an NVIDIA GPU the notebooks
# launch the verified SGLang cells with the real LFM2.5 weights; without one, SGLang itself on the CPU
# (the cookbook's torch stand-ins for two CUDA kernels) serving the project's fixtures.
# ENGINE=sglang|vllm|sglang-cpu|vllm-cpu overrides the choice. Executed notebooks and summary.json
# land in runs/latest/.
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGINE=${ENGINE:-auto}
bash ci/setup.sh machine
cookbook=.venv/bin/cookbook
$cookbook doctor
echo
$cookbook matrix
echo
exec $cookbook run --engine "$ENGINE" --out runs/latest "$@"
