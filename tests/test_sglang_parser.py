"""Every generated `sglang serve` command is accepted by SGLang's own argument parser.

The commands are rendered as users paste them and handed to ci/sglang_argcheck.py, which runs in
its own environment (`sglang` installed with --no-deps, see ci/setup.sh) and calls
`sglang.srt.server_args.prepare_server_args` on each.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from cookbook import commands
from cookbook.commands import Placeholders, launch_spec, render
from cookbook.recipes import parse_recipes

REPO = Path(__file__).resolve().parent.parent
CHECKER = REPO / "ci" / "sglang_argcheck.py"


def sglang_check(python: str, items: list[dict]) -> dict:
    proc = subprocess.run([python, str(CHECKER)], input=json.dumps(items), capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def all_commands(recipes) -> tuple[list[dict], dict[str, commands.LaunchSpec]]:
    items, specs = [], {}

    def add(key, spec, docker=False, values=None):
        specs[key] = spec
        items.append({"id": key, "command": render(spec, values, docker=docker)})

    for hw in (h for h, hardware in recipes.hardware.items() if hardware.supported):
        for variant in recipes.models:
            add(f"{hw}/{variant}", launch_spec(hw, variant))
    for hw in recipes.verified_hardware:
        for variant in recipes.variants:
            add(f"{hw}/{variant}/docker", launch_spec(hw, variant), docker=True)
            for tp in (1, 2) if commands.tp_offered(variant, recipes) else (1,):
                add(f"{hw}/{variant}/tp{tp}", commands.playground(hw, variant, tp=tp).spec)
            for toggle in commands.parser_toggles(variant, recipes):
                spec = commands.playground(hw, variant, parsers=(toggle,)).spec
                add(f"{hw}/{variant}/parser-{toggle}", spec)
    add(
        "h100/instruct/local",
        launch_spec("h100", "instruct"),
        values=Placeholders.resolve({"HOST_IP": "127.0.0.1", "PORT": 31234}),
    )
    items.append({"id": "lambda/sglang", "command": commands.render_lambda("sglang")})
    return items, specs


@pytest.fixture(scope="module")
def checked(sglang_check_python, recipes):
    items, specs = all_commands(recipes)
    report = sglang_check(sglang_check_python, items)
    return report, {r["id"]: r for r in report["results"]}, specs


def test_checker_runs_the_pinned_sglang(checked):
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "gpu"
    ]
    assert f"sglang=={checked[0]['sglang_version']}" in pins


def test_every_command_is_accepted(checked, recipes):
    _, results, specs = checked
    rejected = {k: r["error"] for k, r in results.items() if not r["ok"]}
    assert rejected == {}
    # 11 GPUs x 14 models, 27 docker cells, 27 TP=1 and 15 TP=2 overrides, 3 parser toggles
    # (VL-3B on its three GPUs), one local, one Lambda.
    supported = [h for h in recipes.hardware.values() if h.supported]
    tp2 = len(recipes.verified_hardware) * len(recipes.playground.tp_variants)
    toggles = len(recipes.verified_hardware)
    assert len(results) == len(supported) * len(recipes.models) + 27 * 2 + tp2 + toggles + 2


# Upstream's cells write `--tp`, which SGLang's parser declares only as `--tp-size` /
# `--tensor-parallel-size`: argparse accepts it as an unambiguous prefix. That is the one
# abbreviation the recipes may carry; any other is a typo that happens to parse.
ALLOWED_ABBREVIATIONS = {"--tp": ["--tp-size"]}


def test_only_the_known_abbreviation_is_used(checked):
    _, results, _ = checked
    used = {}
    for result in results.values():
        used.update(result["abbreviations"])
    assert used == ALLOWED_ABBREVIATIONS


def test_a_new_abbreviation_is_caught(sglang_check_python):
    text = "sglang serve --model-path LiquidAI/LFM2.5-350M --tp 1 --mem-fraction 0.8"
    result = sglang_check(sglang_check_python, [{"id": "abbrev", "command": text}])["results"][0]
    assert result["ok"]  # argparse takes it...
    assert result["abbreviations"] == {
        "--tp": ["--tp-size"],
        "--mem-fraction": ["--mem-fraction-static"],
    }
    assert result["parsed"]["mem_fraction_static"] == 0.8


def test_parsed_values_match_the_recipes(checked, recipes):
    _, results, specs = checked
    for key, spec in specs.items():
        parsed = results[key]["parsed"]
        model = recipes.models[spec.variant]
        assert parsed["model_path"] == model.hf_id, key
        assert parsed["trust_remote_code"] is True, key
        assert parsed["tp_size"] == (2 if key.endswith("tp2") else 1), key
        assert parsed["reasoning_parser"] == model.capabilities.reasoning_parser, key
        toggled = key.endswith("parser-toolCall")
        tools = model.capabilities.tools or toggled
        assert parsed["tool_call_parser"] == ("lfm2" if tools else None), key
        assert parsed["port"] == (31234 if key.endswith("local") else 30000), key
        # VL-3B's page sets bfloat16 and a 0.48 memory share; the LFM2.5 page leaves both default
        assert parsed["dtype"] == ("bfloat16" if spec.variant == "vl-3b" else "auto"), key
        if spec.variant == "vl-3b":
            assert parsed["mem_fraction_static"] == 0.48, key
    b200_vl = results["b200/vl-450m/docker"]
    assert b200_vl["parsed"]["attention_backend"] == "flashinfer"
    assert b200_vl["parsed"]["mm_attention_backend"] == "fa4"
    assert b200_vl["parsed"]["mem_fraction_static"] == 0.8
    assert b200_vl["env"] == {
        "HF_TOKEN": "",
        "SGLANG_USE_CUDA_IPC_TRANSPORT": "1",
        "SGLANG_USE_IPC_POOL_HANDLE_CACHE": "1",
    }
    # A derived recipe on an sm80 GPU: SGLang's parser takes it and leaves the backend to its
    # default (flashinfer there, as gpu_rules.default_attention_backend records).
    assert results["a100/instruct"]["parsed"]["attention_backend"] is None
    lam = results["lambda/sglang"]["parsed"]
    assert (lam["served_model_name"], lam["port"], lam["disable_radix_cache"]) == (
        "lfm25_8b_a1b",
        8000,
        True,
    )


@pytest.mark.parametrize(
    ("section", "change", "error"),
    [
        (
            "tool",
            ["--tool-call-parser lfm3"],
            "argument --tool-call-parser: invalid choice: 'lfm3'",
        ),
        (
            "reasoning",
            ["--reasoning-parser qwen3_thinking", "--tool-call-parser lfm2"],
            "invalid choice: 'qwen3_thinking'",
        ),
        (
            "flag",
            ["--tool-call-parser lfm2", "--mem-fraction-statik 0.8"],
            "unrecognized arguments: --mem-fraction-statik",
        ),
        (
            "backend",
            ["--attention-backend trtllm", "--tool-call-parser lfm2"],
            "argument --attention-backend: invalid choice: 'trtllm'",
        ),
    ],
)
def test_a_wrong_recipe_fails_the_check(sglang_check_python, raw_recipes, section, change, error):
    """A deliberately broken copy of the recipes must produce a command SGLang rejects."""
    raw_recipes["deploy"]["cells"]["b200"]["thinking"] = change
    if section == "reasoning":
        raw_recipes["models"]["thinking"]["capabilities"]["reasoning_parser"] = "qwen3_thinking"
        raw_recipes["engines"]["vllm_reasoning_parsers"]["qwen3_thinking"] = "qwen3"
    broken = parse_recipes(raw_recipes)
    spec = commands.verified_spec("b200", "thinking", broken)
    text = commands.render(spec, Placeholders.resolve(recipes=broken))
    result = sglang_check(sglang_check_python, [{"id": "broken", "command": text}])["results"][0]
    assert not result["ok"] and error in result["error"]


def test_an_undeclared_env_var_fails_the_check(sglang_check_python, raw_recipes):
    raw_recipes["deploy"]["vision_env"] = ["SGLANG_USE_CUDA_IPC_TRANSPORTS=1"]
    broken = parse_recipes(raw_recipes)
    text = commands.render(
        commands.verified_spec("h100", "vl", broken), Placeholders.resolve(recipes=broken)
    )
    result = sglang_check(sglang_check_python, [{"id": "env", "command": text}])["results"][0]
    assert not result["ok"] and "SGLANG_USE_CUDA_IPC_TRANSPORTS" in result["error"]


def test_server_launch_plan_parses_and_key_travels_in_a_config_file(sglang_check_python, tmp_path):
    from cookbook.launch_plans import plan_launch
    from cookbook.server import write_sglang_key_config

    plan = plan_launch("thinking", "sglang", hw="h100", port=31555)
    key_file = write_sglang_key_config("not-a-real-key")
    try:
        # argv[0] is the installed console script's path where SGLang is installed
        text = shlex.join(["sglang", *plan.argv[1:], "--config", key_file])
        result = sglang_check(sglang_check_python, [{"id": "plan", "command": text}])["results"][0]
    finally:
        Path(key_file).unlink()
    assert result["ok"], result["error"]
    assert result["parsed"]["api_key_set"] is True
    assert (result["parsed"]["host"], result["parsed"]["port"]) == ("127.0.0.1", 31555)
    assert result["parsed"]["reasoning_parser"] == "qwen3-thinking"
    assert "not-a-real-key" not in plan.display


def test_newer_feature_transport_flag_is_understood(sglang_check_python):
    """The note's newer form parses too, so the note is worth keeping."""
    text = "SGLANG_USE_IPC_POOL_HANDLE_CACHE=1 sglang serve --model-path LiquidAI/LFM2.5-VL-1.6B --mm-feature-transport cuda_ipc"
    result = sglang_check(sglang_check_python, [{"id": "mm", "command": text}])["results"][0]
    assert result["ok"], result["error"]


def pinned_sglang_source(python: str, *relative: str) -> dict[str, str]:
    """The text of files of the pinned SGLang package (paths relative to sglang/srt/), read by
    SGLang's environment's Python; a glob pattern reads every match."""
    script = (
        "import json, pathlib, sys, sglang\n"
        "root = pathlib.Path(sglang.__file__).parent / 'srt'\n"
        "print(json.dumps({str(p.relative_to(root)): p.read_text()"
        " for pattern in sys.argv[1:] for p in sorted(root.glob(pattern))}))\n"
    )
    out = subprocess.run([python, "-c", script, *relative], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_pinned_release_has_what_the_install_note_says(sglang_check_python, recipes):
    """recipes.install.note: the model classes, the lfm2 tool parser and both reasoning parsers
    are in the pinned SGLang (read from its installed source, no GPU needed)."""
    files = pinned_sglang_source(
        sglang_check_python, "models/lfm2*.py", "function_call/function_call_parser.py",
        "parser/reasoning_parser.py",
    )  # fmt: skip
    models = "".join(text for name, text in files.items() if name.startswith("models/"))
    entries = " ".join(re.findall(r"^EntryClass = .*$", models, re.M))
    for arch in ("Lfm2ForCausalLM", "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration"):
        assert arch in entries and arch in recipes.install.note
    assert '"lfm2": Lfm2Detector' in files["function_call/function_call_parser.py"]
    assert '"qwen3-thinking":' in files["parser/reasoning_parser.py"]


def test_notebook_03s_tool_choice_claims_hold_in_the_pinned_sglang(sglang_check_python):
    """03 says: SGLang renders tools into the prompt only when tool_choice != "none", and
    enforces "required" / a named tool with a JSON schema. Read from the pinned source."""
    path = "entrypoints/openai/serving_chat.py"
    source = pinned_sglang_source(sglang_check_python, path)[path]
    render = source.index('if effective_tools and request.tool_choice != "none":')
    block = source[render : render + 3000]
    assert "tools = [item.model_dump() for item in request.tools]" in block
    assert "if item.function.name == request.tool_choice.function.name" in block  # named: only it
    assert 'request.tool_choice == "required"' in block and "get_json_schema_constraint(" in block


def test_the_cpu_launch_parses_with_sglangs_own_parser(sglang_check_python):
    from cookbook.launch_plans import plan_launch

    plan = plan_launch("thinking", "sglang-cpu", port=31556)
    # SGLang reads its CPU switch with os.getenv (utils/common.py is_cpu), not through its
    # declared environment list, which the check holds every other SGLANG_ name to.
    switch = "SGLANG_USE_CPU_ENGINE"
    source = pinned_sglang_source(sglang_check_python, "utils/common.py")["utils/common.py"]
    assert f'os.getenv("{switch}", "0") != "1"' in source and plan.env[switch] == "1"
    env = " ".join(
        f"{k}={v}" for k, v in plan.env.items() if k.startswith("SGLANG_") and k != switch
    )
    text = env + " " + shlex.join(["sglang", *plan.argv[1:]])
    result = sglang_check(sglang_check_python, [{"id": "cpu", "command": text}])["results"][0]
    assert result["ok"], result["error"]
    parsed = result["parsed"]
    assert (parsed["host"], parsed["port"]) == ("127.0.0.1", 31556)
    assert parsed["attention_backend"] == "torch_native" and parsed["dtype"] == "float32"
    assert parsed["reasoning_parser"] == "qwen3-thinking" and parsed["tool_call_parser"] == "lfm2"
    assert parsed["served_model_name"] == "fixture/lfm2-tiny-thinking"
