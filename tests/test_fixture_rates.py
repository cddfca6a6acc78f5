"""The committed evaluation of the fixtures (ci/fixtures/build.py, served by the CPU engine with
the real parsers) meets the rates the cookbook relies on. A rebuild that regresses fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"


def rates(role: str) -> dict[str, float]:
    return json.loads((FIXTURES / f"eval-{role}.json").read_text())["rates"]


@pytest.mark.parametrize("role", ["chat", "thinking"])
def test_weather_calls_on_unseen_phrasings(role):
    r = rates(role)
    assert r["weather_call_parsed"] >= 0.9 and r["weather_call_name"] >= 0.9, r
    assert r["weather_call_args"] >= 0.8, r
    assert r["tool_result_answer"] >= 0.9 and r["tool_result_has_temperature"] >= 0.9, r
    assert r["completions_continuation"] >= 0.9, r


def test_chat_fixture_answers_plainly():
    r = rates("chat")
    assert r["think_leak"] == 0.0 and r["chat_plain_answer"] >= 0.95, r


def test_thinking_fixture_reasoning_is_always_split():
    r = rates("thinking")
    assert r["reasoning_split"] == 1.0, r
    assert r["thought_closed_then_answer"] >= 0.98, r
    evaluation = json.loads((FIXTURES / "eval-thinking.json").read_text())
    misses, total = evaluation["split_misses"], evaluation["n_chat_requests"]
    assert r["thought_closed_then_answer"] == pytest.approx(1 - len(misses) / total, abs=1e-3)
