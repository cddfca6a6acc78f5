"""The recipes file loads, says what the reference says, and malformed copies are rejected clearly."""

from __future__ import annotations

import pytest
import yaml

from cookbook.recipes import RecipeError, load_recipes_file, parse_recipes
from tests.reference import SERVING

EXTRA = {
    "LiquidAI/LFM2.5-1.2B-JP",
    "LiquidAI/LFM2.5-230M-Base",
    "LiquidAI/LFM2.5-350M-Base",
    "LiquidAI/LFM2.5-1.2B-Base",
    "LiquidAI/LFM2.5-8B-A1B-Base",
}
SAMPLING = {
    "8b-a1b": (0.2, {"top_k": 80, "repetition_penalty": 1.05}),
    "instruct": (0.1, {"top_k": 50, "repetition_penalty": 1.05}),
    "thinking": (0.05, {"top_k": 50, "repetition_penalty": 1.05}),
    "350m": (0.1, {"top_k": 50, "repetition_penalty": 1.05}),
    "230m": (0.1, {"top_k": 50, "repetition_penalty": 1.05}),
    "jp": (0.1, {"top_k": 50, "repetition_penalty": 1.05}),
    "jp-original": (0.3, {"min_p": 0.15, "repetition_penalty": 1.05}),
    "vl": (0.1, {"min_p": 0.15, "repetition_penalty": 1.05}),
    "vl-450m": (0.1, {"min_p": 0.15, "repetition_penalty": 1.05}),
    "base-1.2b": (0.3, {"min_p": 0.15, "repetition_penalty": 1.05}),
    "base-230m": (0.3, {"min_p": 0.15, "repetition_penalty": 1.05}),
}


def test_serving_variants_and_extra_models(recipes):
    assert {v: recipes.models[v].hf_id for v in recipes.variants} == SERVING
    assert list(recipes.variants) == list(SERVING)  # the panel's order
    extra = {m.hf_id for m in recipes.models.values() if not m.serving}
    assert extra == EXTRA


def test_capabilities(recipes):
    assert recipes.models["8b-a1b"].capabilities.reasoning_parser == "qwen3"
    assert recipes.models["thinking"].capabilities.reasoning_parser == "qwen3-thinking"
    reasoning = {k for k, m in recipes.models.items() if m.capabilities.reasoning_parser}
    assert reasoning == {"8b-a1b", "thinking"}
    vision = {k for k, m in recipes.models.items() if m.capabilities.vision}
    assert vision == {"vl", "vl-450m", "vl-3b"}
    assert recipes.models["vl-3b"].capabilities.tools is False  # its cells carry no parser
    assert recipes.models["jp-original"].capabilities.tools is False
    assert all(recipes.models[k].capabilities.base for k in recipes.models if k.startswith("base-"))
    assert recipes.models["8b-a1b"].context == "128K"
    assert recipes.models["8b-a1b"].architecture == "Lfm2MoeForCausalLM"
    assert recipes.models["vl"].architecture == "Lfm2VlForConditionalGeneration"


@pytest.mark.parametrize("model_id", sorted(SAMPLING))
def test_sampling_presets(recipes, model_id):
    temperature, extra = SAMPLING[model_id]
    preset = recipes.sampling_for(model_id)
    assert preset.temperature == temperature
    assert dict(preset.extra_body) == extra


def test_matrix_shape(recipes):
    assert recipes.verified_hardware == ["h100", "h200", "b200"]
    # 24 cells of the LFM2.5 page, and the VL-3B page's one model on the same three GPUs
    assert sum(len(row) for row in recipes.deploy.cells.values()) == 27
    assert recipes.deploy.vision_env == [
        "SGLANG_USE_CUDA_IPC_TRANSPORT=1",
        "SGLANG_USE_IPC_POOL_HANDLE_CACHE=1",
    ]
    assert "--mm-feature-transport cuda_ipc" in recipes.deploy.vision_env_note
    derived = {k: h.derive_from for k, h in recipes.hardware.items() if h.derive_from}
    assert derived["a100"] == "h100" and derived["l4"] == "h100" and "t4" not in derived
    assert recipes.hardware["t4"].bf16 is False and recipes.hardware["t4"].status == "unsupported"
    assert [h for h, hw in recipes.hardware.items() if not hw.supported] == ["t4", "v100"]


def test_unsupported_gpu_needs_evidence_and_no_recipe(raw_recipes):
    evidence = raw_recipes["hardware"]["t4"].pop("evidence")
    with pytest.raises(RecipeError, match="hardware.t4: say why it is unsupported in evidence"):
        parse_recipes(raw_recipes)
    raw_recipes["hardware"]["t4"]["evidence"] = evidence
    raw_recipes["hardware"]["v100"]["derive_from"] = "h100"
    with pytest.raises(RecipeError, match="hardware.v100: an unsupported GPU has no cells"):
        parse_recipes(raw_recipes)


def test_lambda_recipe(recipes):
    lam = recipes.lambda_8b_a1b
    assert (lam.served_model_name, lam.port, lam.benchmarked_on) == (
        "lfm25_8b_a1b",
        8000,
        ["b200", "h100", "a100"],
    )
    assert lam.sglang.image == "lmsysorg/sglang:nightly-dev-cu12-20260529-a8cfae0b"
    assert lam.vllm.image == "vllm/vllm-openai:nightly-22a58640b4563f5945aa2052e9e61d425351588d"
    assert "--disable-radix-cache" in lam.sglang.lines
    assert "--tool-call-parser pythonic" in lam.vllm.lines


# ----- rejections ---------------------------------------------------------------------------


def _error(raw) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipes(raw)
    return str(info.value)


def test_unknown_key_is_named(raw_recipes):
    raw_recipes["models"]["instruct"]["toolz"] = True
    assert "models.instruct.toolz: unknown key" in _error(raw_recipes)


def test_missing_key_is_named(raw_recipes):
    del raw_recipes["models"]["vl"]["hf_id"]
    assert "models.vl.hf_id: Field required" in _error(raw_recipes)


def test_wrong_type_is_named(raw_recipes):
    raw_recipes["sampling"]["instruct"]["temperature"] = "cold"
    assert "sampling.instruct.temperature" in _error(raw_recipes)


def test_cells_must_cover_every_variant(raw_recipes):
    del raw_recipes["deploy"]["cells"]["b200"]["vl"]
    message = _error(raw_recipes)
    assert "deploy.cells.b200" in message and "missing: ['vl']" in message


def test_cell_for_unknown_variant(raw_recipes):
    raw_recipes["deploy"]["cells"]["b200"]["vl-9b"] = ["--tool-call-parser lfm2"]
    assert "not a serving variant: ['vl-9b']" in _error(raw_recipes)


def test_malformed_flag_line(raw_recipes):
    raw_recipes["deploy"]["cells"]["b200"]["instruct"] = ["attention-backend trtllm_mha"]
    message = _error(raw_recipes)
    assert "cells.b200.instruct" in message and "is not a flag line" in message


def test_bad_env_assignment(raw_recipes):
    raw_recipes["deploy"]["vision_env"] = ["sglang_use_cuda_ipc_transport"]
    assert "deploy.vision_env" in _error(raw_recipes)


def test_derive_from_unknown_hardware(raw_recipes):
    raw_recipes["hardware"]["l4"]["derive_from"] = "a100"
    message = _error(raw_recipes)
    assert "hardware.l4.derive_from" in message and "valid: h100, h200, b200" in message


def test_missing_sampling_preset(raw_recipes):
    raw_recipes["models"]["base-1.2b"]["sampling"] = "raw"
    assert "models.base-1.2b.sampling: no preset 'raw'" in _error(raw_recipes)


def test_bad_hf_id(raw_recipes):
    raw_recipes["models"]["350m"]["hf_id"] = "LiquidAI/LFM2-350M"
    assert "models.350m.hf_id" in _error(raw_recipes)


def test_not_a_mapping():
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        parse_recipes(["models"])


def test_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipes_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipes_file(bad)


def test_round_trip_of_the_real_file(tmp_path, raw_recipes):
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(raw_recipes, sort_keys=False))
    assert load_recipes_file(path).variants == list(SERVING)


def test_choose_when_keeps_the_seeds_limits(recipes):
    for variant in ("350m", "230m"):
        assert "math, code, or creative writing" in recipes.models[variant].choose_when


def test_support_statement_keeps_the_seeds_advice(recipes):
    note = recipes.install.note
    assert (
        "ships on SGLang main" in note and "install from source or use the Docker dev image" in note
    )
    assert "Checked here for the pinned release" in note
