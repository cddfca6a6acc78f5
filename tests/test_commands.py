"""Rendered commands equal text written here from the reference, not produced by the generator."""

from __future__ import annotations

import pytest

from cookbook import commands
from cookbook.commands import PlaceholderError, Placeholders, launch_spec, render
from cookbook.recipes import CookbookChoiceError
from tests.reference import SERVING, VL_3B_FLAGS, VL_3B_IMAGE

MODELS = SERVING
# The reference's per-hardware flags (after --trust-remote-code / --model-path / --tp 1).
HOPPER = {
    "8b-a1b": ["--reasoning-parser qwen3", "--tool-call-parser lfm2"],
    "instruct": ["--tool-call-parser lfm2"],
    "thinking": ["--reasoning-parser qwen3-thinking", "--tool-call-parser lfm2"],
    "350m": ["--tool-call-parser lfm2"],
    "230m": ["--tool-call-parser lfm2"],
    "jp": ["--tool-call-parser lfm2"],
    "vl": ["--tool-call-parser lfm2"],
    "vl-450m": ["--tool-call-parser lfm2", "--mem-fraction-static 0.8"],
    "vl-3b": VL_3B_FLAGS,
}
B200 = {
    "8b-a1b": ["--attention-backend flashinfer", "--reasoning-parser qwen3", "--tool-call-parser lfm2"],
    "instruct": ["--attention-backend trtllm_mha", "--tool-call-parser lfm2"],
    "thinking": ["--attention-backend trtllm_mha", "--reasoning-parser qwen3-thinking", "--tool-call-parser lfm2"],
    "350m": ["--attention-backend trtllm_mha", "--tool-call-parser lfm2"],
    "230m": ["--attention-backend trtllm_mha", "--tool-call-parser lfm2"],
    "jp": ["--attention-backend trtllm_mha", "--tool-call-parser lfm2"],
    "vl": ["--attention-backend flashinfer", "--mm-attention-backend fa4", "--tool-call-parser lfm2"],
    "vl-450m": ["--attention-backend flashinfer", "--mm-attention-backend fa4", "--tool-call-parser lfm2", "--mem-fraction-static 0.8"],
    "vl-3b": VL_3B_FLAGS,
}  # fmt: skip
EXPECTED_FLAGS = {"h100": HOPPER, "h200": HOPPER, "b200": B200}
VL_ENV = ["SGLANG_USE_CUDA_IPC_TRANSPORT=1", "SGLANG_USE_IPC_POOL_HANDLE_CACHE=1"]
CELLS = [(hw, v) for hw in EXPECTED_FLAGS for v in MODELS]


def expected_bare(hw, variant, host="0.0.0.0", port=30000):
    env = VL_ENV if variant.startswith("vl") else []
    flags = ["--trust-remote-code", f"--model-path {MODELS[variant]}", "--tp 1",
             *EXPECTED_FLAGS[hw][variant], f"--host {host}", f"--port {port}"]  # fmt: skip
    lines = [*env, "sglang serve", *("  " + f for f in flags)]
    return " \\\n".join(lines)


def expected_docker(hw, variant, port=30000):
    env = VL_ENV if variant.startswith("vl") else []
    flags = ["--trust-remote-code", f"--model-path {MODELS[variant]}", "--tp 1",
             *EXPECTED_FLAGS[hw][variant], "--host 0.0.0.0", f"--port {port}"]  # fmt: skip
    lines = [
        "docker run --gpus all",
        "  --shm-size 32g",
        f"  -p {port}:{port}",
        "  -v ~/.cache/huggingface:/root/.cache/huggingface",
        "  --env HF_TOKEN",
        *(f"  --env {e}" for e in env),
        "  --ipc=host",
        "  " + (VL_3B_IMAGE if variant == "vl-3b" else "lmsysorg/sglang:dev-cu13"),
        "  sglang serve",
        *("    " + f for f in flags),
    ]
    return " \\\n".join(lines)


@pytest.mark.parametrize(("hw", "variant"), CELLS)
def test_every_verified_cell_bare(hw, variant):
    spec = launch_spec(hw, variant)
    assert spec.verified and spec.derived_from is None
    assert render(spec) == expected_bare(hw, variant)


@pytest.mark.parametrize(("hw", "variant"), CELLS)
def test_every_verified_cell_docker(hw, variant):
    assert render(launch_spec(hw, variant), docker=True) == expected_docker(hw, variant)


def test_literal_vl_command_on_h100():
    assert render(launch_spec("h100", "vl")) == (
        "SGLANG_USE_CUDA_IPC_TRANSPORT=1 \\\n"
        "SGLANG_USE_IPC_POOL_HANDLE_CACHE=1 \\\n"
        "sglang serve \\\n"
        "  --trust-remote-code \\\n"
        "  --model-path LiquidAI/LFM2.5-VL-1.6B \\\n"
        "  --tp 1 \\\n"
        "  --tool-call-parser lfm2 \\\n"
        "  --host 0.0.0.0 \\\n"
        "  --port 30000"
    )


def test_placeholder_overrides():
    values = Placeholders.resolve({"HOST_IP": "127.0.0.1", "PORT": 31000})
    spec = launch_spec("h200", "thinking")
    assert render(spec, values) == expected_bare("h200", "thinking", host="127.0.0.1", port=31000)
    assert render(spec, values, docker=True).count("31000") == 3  # -p both sides, --port
    curl = commands.render_curl(spec, values)
    assert curl.startswith("curl http://localhost:31000/v1/chat/completions \\\n")
    assert '"model": "LiquidAI/LFM2.5-1.2B-Thinking"' in curl
    assert "-H 'Content-Type: application/json'" in curl


def test_curl_port_can_differ_from_bind_port():
    values = Placeholders.resolve({"PORT": 31000, "CURL_PORT": 8080, "CURL_HOST": "10.0.0.5"})
    assert "http://10.0.0.5:8080/v1/chat/completions" in commands.render_curl(
        launch_spec("h100", "350m"), values
    )


def test_hf_token_is_passed_by_name_only(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_canaryCANARYcanary")
    text = render(launch_spec("b200", "instruct"), docker=True)
    assert "  --env HF_TOKEN \\\n" in text and "canary" not in text.lower()
    renamed = render(
        launch_spec("b200", "instruct"), Placeholders.resolve({"HF_TOKEN": "MY_HF"}), docker=True
    )
    assert '--env "HF_TOKEN=$MY_HF"' in renamed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"PORT": "0"}, "PORT must be a port number 1-65535"),
        ({"PORT": 70000}, "PORT must be a port number"),
        ({"PORT": "abc"}, "PORT must be a port number"),
        ({"HOST_IP": "0.0.0.0; rm -rf /"}, "HOST_IP must be a host name"),
        ({"HF_TOKEN": "hf_secretvalue123"}, "not the token itself"),
        ({"HF_TOKEN": "my token"}, "not the token itself"),
        ({"HOSTIP": "1.2.3.4"}, "unknown placeholder 'HOSTIP'; valid: HOST_IP, PORT, HF_TOKEN"),
    ],
)
def test_placeholder_errors(overrides, message):
    with pytest.raises(PlaceholderError, match=message.replace("(", r"\(")) as info:
        Placeholders.resolve(overrides)
    assert "secretvalue" not in str(info.value)


def test_unknown_names_list_valid_choices():
    with pytest.raises(CookbookChoiceError) as info:
        launch_spec("x100", "instruct")
    assert "unknown hardware 'x100'; valid: h100, h200, b200" in str(info.value)
    with pytest.raises(CookbookChoiceError) as info:
        launch_spec("h100", "2b")
    assert "unknown variant '2b'; valid: 8b-a1b, instruct" in str(info.value)
    with pytest.raises(CookbookChoiceError, match="valid: h100, h200, b200$"):
        commands.verified_spec("a100", "instruct")


# ----- derived (Not Verified) recipes --------------------------------------------------------


def test_bf16_gpu_outside_matrix_takes_hopper_flags():
    spec = launch_spec("a100", "8b-a1b")
    assert not spec.verified and spec.derived_from == "h100/8b-a1b"
    assert render(spec) == expected_bare("h100", "8b-a1b")
    assert any("outside the verified matrix" in note for note in spec.notes)


def test_unsupported_gpus_get_no_recipe(recipes):
    for hw in ("t4", "v100"):
        with pytest.raises(commands.UnsupportedGpuError) as info:
            launch_spec(hw, "instruct")
        assert recipes.hardware[hw].unsupported in str(info.value)
        assert recipes.hardware[hw].evidence  # the reason comes with its sources


@pytest.mark.parametrize("hw", ["gh200", "b300", "a100", "a10g", "l4", "l40s"])
def test_every_derived_recipe_can_start_by_the_datas_rules(recipes, hw):
    """Its attention backend (the flag, else SGLang 0.5.23's default for the GPU) is one LFM2
    can use on that compute capability, and every model's weights fit the margin."""
    cc = recipes.hardware[hw].compute_capability
    for variant in recipes.models:
        spec = launch_spec(hw, variant)
        backend = commands.attention_backend(hw, spec.flags, recipes)
        assert backend != "triton" and recipes.gpu_rules.attention_backends[backend].covers(cc)
        assert not spec.verified and spec.derived_from


def test_default_backend_follows_sglangs_choice(recipes):
    rules = recipes.gpu_rules
    assert rules.default_backend("9.0") == "fa3"  # Hopper
    assert rules.default_backend("10.0") == "flashinfer"  # LFM2's override on sm100
    assert rules.default_backend("8.0") == rules.default_backend("8.9") == "flashinfer"


def test_a_backend_that_does_not_cover_the_gpu_is_refused(recipes):
    # The B200 cells' trtllm_mha on an sm80 GPU: the rule must catch it.
    flags = list(commands.verified_spec("b200", "instruct").flags)
    with pytest.raises(commands.UnsupportedGpuError, match="backends for this GPU: flashinfer"):
        commands.check_startable("a100", "instruct", flags, recipes)


def test_memory_rule_refuses_the_flagship_on_a_small_gpu():
    # 8.3B parameters x 2 bytes = 15.5 GiB of weights; with the 80 % margin it needs 19.3 GiB.
    assert commands.weights_gib("8b-a1b") == pytest.approx(15.46, abs=0.01)
    with pytest.raises(commands.UnsupportedGpuError) as info:
        launch_spec("a100", "8b-a1b", memory_gib=10.0)  # e.g. an A100 MIG slice
    assert "needs at least 19.3 GiB" in str(info.value) and "10 GiB detected" in str(info.value)
    tight = launch_spec("l4", "8b-a1b", memory_gib=22.5)
    assert any("Tight fit: 15.5 of 22 GiB" in n for n in tight.notes)
    assert not any("Tight" in n for n in launch_spec("l4", "instruct", memory_gib=22.5).notes)


def test_blackwell_neighbour():
    assert render(launch_spec("b300", "vl")) == render(launch_spec("b200", "vl"))
    assert launch_spec("b300", "vl").derived_from == "b200/vl"


def test_extra_models_swap_the_model_path():
    jp = launch_spec("h100", "jp-original")
    assert not jp.verified and jp.derived_from == "h100/jp"
    assert "--tool-call-parser lfm2" not in jp.flags
    assert "--model-path LiquidAI/LFM2.5-1.2B-JP" in render(jp).splitlines()[2]
    base = render(launch_spec("b200", "base-8b-a1b"))
    assert "--model-path LiquidAI/LFM2.5-8B-A1B-Base" in base
    assert "--reasoning-parser" not in base and "--tool-call-parser" not in base
    assert "--attention-backend flashinfer" in base  # the state-cache backend stays


def test_server_argv_has_no_shell_words():
    env, argv = commands.server_argv(
        launch_spec("b200", "vl-450m"), Placeholders.resolve({"HOST_IP": "127.0.0.1"})
    )
    assert env == {"SGLANG_USE_CUDA_IPC_TRANSPORT": "1", "SGLANG_USE_IPC_POOL_HANDLE_CACHE": "1"}
    assert argv == ["sglang", "serve", "--trust-remote-code", "--model-path", "LiquidAI/LFM2.5-VL-450M",
                    "--tp", "1", "--attention-backend", "flashinfer", "--mm-attention-backend", "fa4",
                    "--tool-call-parser", "lfm2", "--mem-fraction-static", "0.8",
                    "--host", "127.0.0.1", "--port", "30000"]  # fmt: skip


def test_lambda_commands_as_the_guide_writes_them():
    assert commands.render_lambda("sglang") == (
        "docker run -d --gpus all \\\n"
        "    -p 8000:8000 \\\n"
        "    --ipc=host \\\n"
        "    -v ~/.cache/huggingface:/root/.cache/huggingface \\\n"
        "    lmsysorg/sglang:nightly-dev-cu12-20260529-a8cfae0b \\\n"
        "    python3 -m sglang.launch_server \\\n"
        "    --model-path LiquidAI/LFM2.5-8B-A1B \\\n"
        "    --served-model-name lfm25_8b_a1b \\\n"
        "    --tp 1 \\\n"
        "    --host 0.0.0.0 --port 8000 \\\n"
        "    --tool-call-parser lfm2 \\\n"
        "    --trust-remote-code \\\n"
        "    --mem-fraction-static 0.9 \\\n"
        "    --disable-radix-cache"
    )
    vllm = commands.render_lambda("vllm")
    assert (
        vllm.splitlines()[4]
        == "    vllm/vllm-openai:nightly-22a58640b4563f5945aa2052e9e61d425351588d \\"
    )
    assert vllm.endswith("--gpu-memory-utilization 0.9")
    with pytest.raises(CookbookChoiceError, match="valid: sglang, vllm"):
        commands.render_lambda("trt")


# ----- where the cookbook and its sources differ (each difference said where it is shown) ------


def test_tp_override_is_offered_on_the_larger_checkpoints_only(recipes):
    assert recipes.playground.tp_variants == ["8b-a1b", "instruct", "thinking", "jp", "vl"]
    assert commands.with_tp(launch_spec("h100", "8b-a1b"), 2).flags.count("--tp 2") == 1
    assert commands.tp_offered("base-8b-a1b") and not commands.tp_offered("base-350m")
    for small in ("350m", "230m", "vl-450m"):
        with pytest.raises(CookbookChoiceError, match="larger checkpoints only"):
            commands.with_tp(launch_spec("h100", small), 2)
        # TP=1 is the cell itself: no override, still Verified.
        assert commands.with_tp(launch_spec("h100", small), 1).verified


def test_base_commands_say_the_parsers_are_dropped_by_the_cookbooks_choice(recipes):
    for variant in ("base-230m", "base-1.2b", "base-8b-a1b"):
        notes = " ".join(launch_spec("h200", variant).notes)
        assert (
            "this cookbook's own choice" in notes
            and "LFM2.5 cookbook page launches the Base repos" in notes
        )
    assert not any("own choice" in n for n in launch_spec("h200", "jp-original").notes)


def test_vl_3b_has_its_own_page_image_and_submit_model():
    spec = launch_spec("b200", "vl-3b")
    assert spec.verified and spec.model == MODELS["vl-3b"]
    assert render(spec) == expected_bare("b200", "vl-3b")
    result = commands.playground("b200", "vl-3b", parsers=("toolCall",))
    assert not result.verified and result.added == ["  --tool-call-parser lfm2"]
    assert result.command.index("--tool-call-parser lfm2") < result.command.index("--host")
    assert "model=LiquidAI%2FLFM2.5-VL-3B" in result.submit_url
    curl = commands.render_curl(spec)
    assert '"image_url"' in curl and '"model": "LiquidAI/LFM2.5-VL-3B"' in curl


def test_parser_toggles_are_offered_only_where_the_page_has_them():
    assert commands.parser_toggles("vl-3b") == {"toolCall": "--tool-call-parser lfm2"}
    assert commands.parser_toggles("instruct") == {}
    with pytest.raises(CookbookChoiceError, match=r"parser toggle \(instruct's page has none"):
        commands.playground("h100", "instruct", parsers=("toolCall",))
    with pytest.raises(
        CookbookChoiceError, match=r"unknown parser toggle for vl-3b 'x'; valid: toolCall"
    ):
        commands.playground("h100", "vl-3b", parsers=("x",))
    # TP=2 is the LFM2.5 page's; VL-3B's page offers only 1.
    with pytest.raises(CookbookChoiceError, match=r"unknown TP override 2; valid: 1"):
        commands.playground("h100", "vl-3b", tp=2)
    assert commands.playground("h100", "vl-3b", tp=1).verified
