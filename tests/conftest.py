from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from cookbook.recipes import RECIPES_PATH, load_recipes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def recipes():
    return load_recipes()


@pytest.fixture(scope="session")
def _raw_recipes():
    return yaml.safe_load(RECIPES_PATH.read_text())


@pytest.fixture
def raw_recipes(_raw_recipes):
    """A fresh, mutable copy of the YAML data, for building malformed variants."""
    return copy.deepcopy(_raw_recipes)


@pytest.fixture(scope="session")
def cookbook_exe() -> str:
    """The installed `cookbook` console script of the environment running the tests."""
    exe = Path(sys.executable).parent / "cookbook"
    found = str(exe) if exe.exists() else shutil.which("cookbook")
    if not found:
        pytest.fail("the `cookbook` console script is not installed: run `pip install -e .[dev]`")
    return found


@pytest.fixture(scope="session")
def sglang_check_python() -> str:
    """Python of SGLang's environment (`ci/setup.sh sglang`): its own argument parser, tool-call
    and reasoning parsers and benchmark client run there, as installed for users."""
    path = os.environ.get("COOKBOOK_SGLANG_CHECK_PYTHON") or str(
        REPO / ".venvs" / "sglang" / "bin" / "python"
    )
    if not Path(path).exists():
        pytest.fail(f"no SGLang environment at {path}: run `bash ci/setup.sh sglang`")
    return path


# Fixtures that make a test slow, and the marker each gives it (`make test-fast` skips them).
MARK_BY_FIXTURE = {
    "sglang_check_python": "engine",
    "_needs_sglang": "engine",  # test_server: every test there starts SGLang
    "sglang_server": "engine",
    "vllm_server": "engine",
    "engine": "engine",  # test_bad_inputs' shared server
    "guarded_server": "engine",
    "executed": "notebooks",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in MARK_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    # The tests that read the notebook run go last: the run starts in the background when
    # collection ends (pytest_collection_finish) and works while every other test does.
    items.sort(key=lambda item: "executed" in getattr(item, "fixturenames", ()))


NVIDIA_SMI_ANSWERS = REPO / "tests" / "data" / "nvidia-smi"


def fake_nvidia_smi_env(tmp_path: Path, answer: str | None, **extra: str) -> dict[str, str]:
    """An environment whose PATH starts with an `nvidia-smi` printing a recorded answer
    (tests/data/nvidia-smi/ANSWER.txt); None: no nvidia-smi at all (and no sglang either)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    path = os.environ["PATH"]
    if answer is not None:
        exe = bin_dir / "nvidia-smi"
        exe.write_text(f"#!/bin/sh\ncat {NVIDIA_SMI_ANSWERS / answer}.txt\n")
        exe.chmod(0o755)
    else:
        path = ":".join(p for p in path.split(":") if not (Path(p) / "nvidia-smi").exists())
    env = {**os.environ, "PATH": f"{bin_dir}:{path}", **extra}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


CANARY = "hf_CANARY_do_not_leak_4f1c9e"
# The whole run happens in the `executed` fixture, inside the first test's time limit.
RUN_TIMEOUT = pytest.mark.timeout(3000)


RUN_LIMIT_S = 3000
_background: dict = {}  # the notebook run started at the end of collection, while it lasts


def pytest_collection_finish(session):
    """Start `cookbook run` (every notebook, SGLang on the CPU) in the background when a selected
    test will read it: it overlaps the other tests (most of their time is waiting on engines)."""
    wanted = any("executed" in getattr(item, "fixturenames", ()) for item in session.items)
    if not wanted or os.environ.get("COOKBOOK_TEST_REUSE_RUN") or session.config.option.collectonly:
        return
    import subprocess
    import time

    out = session.config._tmp_path_factory.mktemp("run")
    logs = out / "logs"
    env = {**os.environ, "HF_TOKEN": CANARY, "COOKBOOK_LOG_DIR": str(logs)}
    exe = Path(sys.executable).parent / "cookbook"  # as the cookbook_exe fixture finds it
    exe = exe if exe.exists() else Path(shutil.which("cookbook") or exe)
    streams = [open(out.parent / f"run-{name}.txt", "w+") for name in ("stdout", "stderr")]  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "run", "--engine", "sglang-cpu", "--out", str(out)],
                            env=env, stdout=streams[0], stderr=streams[1], text=True)  # fmt: skip
    _background.update(out=out, logs=logs, proc=proc, streams=streams, started=time.monotonic())


def pytest_sessionfinish(session):
    """A run no test waited for (the session stopped early) is interrupted like Ctrl-C, which
    stops its servers; only if that does not end it within a minute is it killed."""
    import signal
    import subprocess

    proc = _background.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in _background.pop("streams", []):
        stream.close()


@pytest.fixture(scope="session")
def executed(cookbook_exe):
    """Every notebook executed on SGLang on the CPU, as `cookbook run` does it, with HF_TOKEN set
    to a canary: (run folder, server logs folder, the finished process). Shared by the notebook
    tests and the docs-site test; started in the background (pytest_collection_finish), awaited
    here within RUN_LIMIT_S of its start."""
    import subprocess
    import time

    reuse = os.environ.get("COOKBOOK_TEST_REUSE_RUN")  # a run made with this fixture, to iterate
    if reuse:
        done = subprocess.CompletedProcess([], 0, "", "")
        return Path(reuse), Path(reuse) / "logs", done
    if "proc" not in _background:
        pytest.fail("the notebook run was not started at the end of collection (see conftest)")
    proc = _background["proc"]
    left = RUN_LIMIT_S - (time.monotonic() - _background["started"])
    try:
        proc.wait(timeout=max(left, 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"`cookbook run` took over {RUN_LIMIT_S} s")
    for stream in _background["streams"]:
        stream.seek(0)
    stdout, stderr = (stream.read() for stream in _background["streams"])
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return _background["out"], _background["logs"], done
