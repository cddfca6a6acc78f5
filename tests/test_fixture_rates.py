"""The committed evaluation of the fixtures (ci/fixtures/build.py and build_moe.py, served by the
CPU engine with the real parsers) meets the rates the cookbook relies on. A rebuild that regresses
fails here. The MoE fixture (eval-moe.json) is a thinking model: it meets the thinking floors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"


def safetensors_keys(path: Path) -> set[str]:
    """Tensor names from a safetensors header (8-byte length, then JSON): no safetensors needed."""
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return set(header) - {"__metadata__"}


def rates(role: str) -> dict[str, float]:
    return json.loads((FIXTURES / f"eval-{role}.json").read_text())["rates"]


@pytest.mark.parametrize("role", ["chat", "thinking", "moe"])
def test_weather_calls_on_unseen_phrasings(role):
    r = rates(role)
    assert r["weather_call_parsed"] >= 0.9 and r["weather_call_name"] >= 0.9, r
    assert r["weather_call_args"] >= 0.8, r
    assert r["tool_result_answer"] >= 0.9 and r["tool_result_has_temperature"] >= 0.9, r
    assert r["completions_continuation"] >= 0.9, r


def test_chat_fixture_answers_plainly():
    r = rates("chat")
    assert r["think_leak"] == 0.0 and r["chat_plain_answer"] >= 0.95, r


@pytest.mark.parametrize("role", ["thinking", "moe"])
def test_thinking_fixture_reasoning_is_always_split(role):
    r = rates(role)
    assert r["reasoning_split"] == 1.0, r
    assert r["thought_closed_then_answer"] >= 0.98, r
    evaluation = json.loads((FIXTURES / f"eval-{role}.json").read_text())
    misses, total = evaluation["split_misses"], evaluation["n_chat_requests"]
    assert r["thought_closed_then_answer"] == pytest.approx(1 - len(misses) / total, abs=1e-3)


def test_moe_fixture_evaluation_is_of_the_served_fixture():
    from cookbook.launch_plans import fixture_path

    evaluation = json.loads((FIXTURES / "eval-moe.json").read_text())
    assert evaluation["role"] == "thinking" and "--reasoning-parser" in evaluation["server_flags"]
    assert evaluation["fixture"] == fixture_path("8b-a1b").name


@pytest.mark.parametrize("variant", ["8b-a1b", "base-8b-a1b"])
def test_8b_a1b_fixture_is_a_tiny_moe(variant):
    """LFM2.5-8B-A1B is Lfm2MoeForCausalLM: its stand-in has that architecture, several routed
    experts with top-k routing, LFM2-MoE's dense first layers, per-expert weights in the layout
    vLLM loads, and says what it is."""
    from cookbook.launch_plans import fixture_path

    path = fixture_path(variant)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["Lfm2MoeForCausalLM"]
    assert config["model_type"] == "lfm2_moe"
    experts, top_k = config["num_experts"], config["num_experts_per_tok"]
    assert experts > 1 and 1 < top_k < experts, config
    assert config["use_expert_bias"] and config["norm_topk_prob"]
    assert 0 < config["num_dense_layers"] < config["num_hidden_layers"]
    assert "TEST FIXTURE, NOT LFM2.5" in config["_fixture"]
    assert "NOT LFM2.5" in (path / "README.md").read_text()
    keys = safetensors_keys(path / "model.safetensors")
    for layer in range(config["num_hidden_layers"]):
        ff = f"model.layers.{layer}.feed_forward."
        if layer < config["num_dense_layers"]:
            assert f"{ff}w1.weight" in keys and f"{ff}gate.weight" not in keys
        else:
            assert {f"{ff}gate.weight", f"{ff}expert_bias"} <= keys
            assert {
                f"{ff}experts.{e}.w{w}.weight" for e in range(experts) for w in (1, 2, 3)
            } <= keys
    # the tokenizer, template and special tokens of the thinking fixture it was upcycled from
    think = fixture_path("thinking")
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (path / name).read_bytes() == (think / name).read_bytes(), name


def test_moe_fixture_routing_was_trained():
    """The build recorded experts that moved apart from their common start and routing that uses
    every expert."""
    moe = json.loads((FIXTURES / "build-info.json").read_text())["moe"]
    assert moe["train"]["steps"] > 0 and moe["step0_max_logit_gap"] < 1e-3
    assert all(spread > 0.01 for spread in moe["expert_spread"].values()), moe["expert_spread"]
    for layer, shares in moe["expert_shares_after"].items():
        assert len(shares) == moe["experts"] and min(shares) > 0.05, (layer, shares)
