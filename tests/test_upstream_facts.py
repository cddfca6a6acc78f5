"""What the notebooks say about the pinned engines and libraries, read from the pinned code
itself: each test reads the installed source (or runs the installed parser) and the notebook
sentence that states the fact, so a version bump that changes the fact fails here."""

from __future__ import annotations

import ast
import inspect
import subprocess
from pathlib import Path

import nbformat
import pytest

from cookbook.recipes import load_recipes
from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"


def prose(stem: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return " ".join(text.split())  # one line: sentences wrap anywhere


def site_packages(venv: str) -> Path:
    found = sorted((REPO / ".venvs" / venv / "lib").glob("python3*/site-packages"))
    if not found:
        pytest.fail(f"no environment .venvs/{venv}: run `bash ci/setup.sh` for it")
    return found[0]


def test_the_anthropic_sdk_sends_its_api_key_as_a_bearer_token():
    import anthropic

    source = inspect.getsource(anthropic.Anthropic._api_key_auth.fget)
    assert 'return {"Authorization": f"Bearer {api_key}"}' in source
    assert "x-api-key" not in source.lower()
    text = prose("07_anthropic_messages")
    assert f"anthropic {anthropic.__version__}" in text and "`Authorization: Bearer` header" in text
    assert "x-api-key" not in text


def test_the_routers_default_health_check_interval():
    from sglang_router.router_args import RouterArgs

    default = RouterArgs.health_check_interval_secs
    interval = load_recipes().scale_out.health_check_interval_secs
    text = prose("08_data_parallel_router")
    assert f"default is {default} s" in text and f"That is {interval} s here" in text


@pytest.mark.engine
def test_vllms_own_key_check_guards_only_these_prefixes():
    path = site_packages("cpu-engine") / "vllm/entrypoints/serve/middleware/authenticate.py"
    tree = ast.parse(path.read_text())
    (prefixes,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "GUARDED_PREFIX"
    ]
    text = prose("07_anthropic_messages")
    named = ", ".join(f"`{p}`" for p in prefixes[:-1]) + f" and `{prefixes[-1]}`"
    assert f"guards only paths under {named}" in text, named


@pytest.mark.engine
def test_sglang_deprecations_the_notebooks_mention():
    sglang = site_packages("sglang") / "sglang"
    hook = (sglang / "srt/arg_groups/serving_hook.py").read_text()
    assert '"SGLANG_USE_CUDA_IPC_TRANSPORT is deprecated; use "' in hook
    assert "logs that it is deprecated" in prose("04_vision")
    alias = (sglang / "bench_serving.py").read_text()
    assert "`sglang.bench_serving` is deprecated" in alias and "FutureWarning" in alias
    assert "`sglang.bench_serving` is its deprecated alias in 0.5.23" in prose(
        "06_throughput_benchmark"
    )


@pytest.mark.engine
def test_sglang_takes_dp_size_itself(sglang_check_python):
    probe = (
        "import argparse\n"
        "from sglang.srt.server_args import ServerArgs\n"
        "p = argparse.ArgumentParser(); ServerArgs.add_cli_args(p)\n"
        "print(p.parse_args(['--model-path', 'x', '--dp-size', '2']).dp_size)\n"
    )
    done = subprocess.run([sglang_check_python, "-c", probe], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "2", done.stderr[-2000:]
    assert "also takes `--dp-size`" in prose("08_data_parallel_router")


@pytest.mark.engine
def test_the_driver_requirement_follows_sglangs_torch_build():
    version = (site_packages("sglang") / "torch/version.py").read_text()
    cuda = ast.literal_eval(version.split("cuda: Optional[str] = ", 1)[1].splitlines()[0])
    torch = ast.literal_eval(version.split("__version__ = ", 1)[1].splitlines()[0])
    why = load_recipes().engines.sglang.min_driver_why
    assert cuda == "13.0" and f"({torch})" in why and "CUDA 13.0 build" in why
