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


@pytest.fixture(scope="session")
def executed(tmp_path_factory, cookbook_exe):
    """Every notebook executed on SGLang on the CPU, as `cookbook run` does it, with HF_TOKEN set
    to a canary: (run folder, server logs folder, the finished process). Shared by the notebook
    tests and the docs-site test."""
    import subprocess

    reuse = os.environ.get("COOKBOOK_TEST_REUSE_RUN")  # a run made with this fixture, to iterate
    if reuse:
        done = subprocess.CompletedProcess([], 0, "", "")
        return Path(reuse), Path(reuse) / "logs", done
    out = tmp_path_factory.mktemp("run")
    logs = out / "logs"
    env = {**os.environ, "HF_TOKEN": CANARY, "COOKBOOK_LOG_DIR": str(logs)}
    proc = subprocess.run([cookbook_exe, "run", "--engine", "sglang-cpu", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=3000)  # fmt: skip
    return out, logs, proc
