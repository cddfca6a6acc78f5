#!/usr/bin/env bash
# The main job: what this machine offers, the verified matrix, and the command for its GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh main
cookbook=.venv/bin/cookbook
$cookbook doctor
echo
$cookbook matrix
hw=$(.venv/bin/python -c "from helpers.gpu import detect; print(detect().hw or '')")
variant=${VARIANT:-instruct}
echo
if [ -n "$hw" ]; then
  echo "# The command for this machine's GPU ($hw) and $variant:"
  $cookbook command --hw "$hw" --variant "$variant"
else
  echo "# No NVIDIA GPU here; the verified H100 command for $variant, for reference:"
  $cookbook command --hw h100 --variant "$variant"
fi
