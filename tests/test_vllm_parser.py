"""Every vLLM launch the cookbook makes is accepted by vLLM's own parser and parser registries:
the CPU engine's plan for every model, the GPU vLLM plans, and the Lambda guide's command."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from cookbook import commands
from cookbook.launch_plans import cpu_engine_python, plan_launch
from cookbook.recipes import load_recipes, parse_recipes

pytestmark = pytest.mark.engine  # every test here starts an engine

CHECKER = Path(__file__).resolve().parent.parent / "ci" / "vllm_argcheck.py"


def vllm_check(items: list[dict]) -> dict:
    python = cpu_engine_python()
    if not python.exists():
        pytest.fail(f"no CPU engine at {python}: run `bash ci/setup.sh cpu-engine`")
    proc = subprocess.run([str(python), str(CHECKER)], input=json.dumps(items), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _engine_args(argv) -> list[str]:
    argv = list(argv)
    return argv[argv.index("-m") + 2 :]  # after `python -m vllm.entrypoints.openai.api_server`


@pytest.fixture(scope="module")
def checked():
    recipes = load_recipes()
    items = []
    for variant in recipes.models:
        items.append(
            {
                "id": f"cpu/{variant}",
                "argv": _engine_args(plan_launch(variant, "vllm-cpu", port=31000).argv),
            }
        )
        items.append(
            {
                "id": f"vllm/{variant}",
                "argv": _engine_args(plan_launch(variant, "vllm", port=31000).argv),
            }
        )
    items.append({"id": "lambda/vllm", "argv": commands.lambda_argv("vllm")})
    return vllm_check(items)


def test_every_vllm_command_is_accepted(checked):
    rejected = {r["id"]: r["error"] for r in checked["results"] if not r["ok"]}
    assert rejected == {}
    assert len(checked["results"]) == 2 * len(load_recipes().models) + 1


def test_parsed_values(checked):
    results = {r["id"]: r["parsed"] for r in checked["results"]}
    assert results["cpu/thinking"]["reasoning_parser"] == "qwen3"
    assert (
        results["cpu/instruct"]["tool_call_parser"] == "lfm2"
        and results["cpu/instruct"]["enable_auto_tool_choice"]
    )
    assert results["cpu/base-1.2b"]["tool_call_parser"] is None
    assert str(results["cpu/instruct"]["optimization_level"]) == "0"
    assert results["lambda/vllm"]["tool_call_parser"] == "pythonic"
    assert results["lambda/vllm"]["served_model_name"] == ["lfm25_8b_a1b"]
    assert results["vllm/8b-a1b"]["tensor_parallel_size"] == 1


def test_a_wrong_parser_name_fails(raw_recipes):
    raw_recipes["engines"]["vllm_cpu"]["tool_flags"] = [
        "--enable-auto-tool-choice",
        "--tool-call-parser lfm3",
    ]
    broken = parse_recipes(raw_recipes)
    argv = _engine_args(plan_launch("instruct", "vllm-cpu", port=31000, recipes=broken).argv)
    (result,) = vllm_check([{"id": "broken", "argv": argv}])["results"]
    assert not result["ok"] and "'lfm3' is not registered" in result["error"]
    bad_flag = shlex.split("--model x --max-model-length 2048")
    (result,) = vllm_check([{"id": "flag", "argv": bad_flag}])["results"]
    assert not result["ok"]
