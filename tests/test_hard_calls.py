"""cookbook.hard_calls: the cases file, the outcomes judged from what a parser returns, the table,
a missing engine, and (with .venvs) the probe against SGLang's own detector called directly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cookbook import hard_calls
from cookbook.hard_calls import CALL_START, CaseResult, PathResult

CASES = hard_calls.load_cases()


def path(*calls, content="", error=None) -> PathResult:
    return PathResult(tuple(calls), content, error, ())


def case(case_id: str):
    return next(c for c in CASES if c.id == case_id)


def test_every_case_is_complete_and_offers_a_schema():
    assert len({c.id for c in CASES}) == len(CASES) >= 8
    for c in CASES:
        assert c.text.startswith(CALL_START) and c.text.endswith("<|tool_call_end|>"), c.id
        assert c.tools and all(t["function"]["parameters"]["type"] == "object" for t in c.tools)
        offered = {t["function"]["name"] for t in c.tools}
        assert c.means is None or {m["name"] for m in c.means} <= offered, c.id


@pytest.mark.parametrize("field", hard_calls.FIELDS)
def test_a_case_without_a_field_is_named(tmp_path: Path, field: str):
    data = yaml.safe_load(hard_calls.CASES_PATH.read_text())
    del data["cases"][1][field]
    bad = tmp_path / "hard-calls.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(hard_calls.HardCallsDataError, match=f"has no {field} "):
        hard_calls.load_cases(bad)


def test_a_case_offering_an_unknown_tool_is_named(tmp_path: Path):
    data = yaml.safe_load(hard_calls.CASES_PATH.read_text())
    data["cases"][0]["tools"] = ["get_time"]
    bad = tmp_path / "hard-calls.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(hard_calls.HardCallsDataError, match=r"'plain' offers tools .*get_time"):
        hard_calls.load_cases(bad)


def test_outcomes_come_from_what_the_parser_returned():
    plain, two = case("plain"), case("broken_sibling")
    paris = ("get_weather", '{"location": "Paris"}')
    label = lambda p, c=plain: p.outcome(c).label  # noqa: E731
    assert label(path(paris)) == "parsed"
    assert label(path(("get_weather", '{"location": "Oslo"}'))) == "wrong arguments"
    assert label(path(("get_weather", '{"location": Infinity}'))) == "not JSON"  # strict JSON
    assert label(path(("get_weather", '{"location": "Par'))) == "not JSON"
    assert label(path(content="")) == "dropped"
    assert label(path(content=plain.text)) == "text in content"
    assert label(path(error="ValueError: x")) == "parser raised"
    assert label(path(paris), two) == "one call lost"
    # No JSON reading of the text (1e999): any strict-JSON call counts as parsed.
    assert label(path(("search", '{"query": "cats"}')), case("overflow")) == "parsed"


def fake_results() -> list[CaseResult]:
    paris = ("get_weather", '{"location": "Paris"}')
    return [
        CaseResult(case("plain"), "sglang", "0.5.23", (), path(paris), path(paris)),
        CaseResult(case("positional"), "sglang", "0.5.23", (), path(), path()),
        CaseResult(case("plain"), "vllm", "0.32.0", (), path(paris), path(paris)),
        CaseResult(case("positional"), "vllm", "0.32.0", (),
                   path(("get_weather", '{"unit": "celsius"}')), path(content=CALL_START)),
    ]  # fmt: skip


def test_the_table_reads_case_by_engine_and_path():
    lines = hard_calls.table(fake_results()).splitlines()
    assert lines[0].split() == ["SGLang", "0.5.23", "vLLM", "0.32.0"]
    assert lines[1].split() == [
        "case",
        "not",
        "streamed",
        "streamed",
        "not",
        "streamed",
        "streamed",
    ]
    assert set(lines[2]) == {"-", " "}
    assert lines[3].split() == ["plain"] + ["parsed"] * 4
    assert lines[4].split() == ["positional", "dropped", "dropped", "wrong", "arguments", "text",
                                "in", "content"]  # fmt: skip
    legend = lines[lines.index("what a client should do:") + 1 :]
    assert [line.split(":")[0].strip() for line in legend] == [
        "parsed", "dropped", "wrong arguments", "text in content"]  # fmt: skip
    grid = hard_calls.outcomes(fake_results())
    assert grid["positional", "vllm", "streamed"].label == "text in content"
    shown = hard_calls.details(fake_results())
    assert 'get_weather {"unit": "celsius"}' in shown and "content=''" in shown


def test_a_missing_engine_is_said_and_skipped(monkeypatch, capsys):
    monkeypatch.setattr(hard_calls, "engine_python", lambda engine: None)
    assert hard_calls.run(CASES) == []
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("SGLang is not installed here") and "ci/setup.sh sglang" in said[0]
    assert said[1].startswith("vLLM is not installed here") and "cpu-engine" in said[1]


def test_a_failing_probe_shows_its_stderr(tmp_path: Path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'ImportError: no sglang here' >&2\nexit 3\n")
    python.chmod(0o755)
    with pytest.raises(hard_calls.ProbeError, match=r"(?s)exit 3.*no sglang here"):
        hard_calls.probe("sglang", python, CASES[:1])
    python.write_text("#!/bin/sh\necho 'still loading' >&2\nsleep 5\n")
    with pytest.raises(hard_calls.ProbeError, match=r"(?s)ran past 1 s.*still loading"):
        hard_calls.probe("sglang", python, CASES[:1], timeout_s=1)


# ----- the real parsers (.venvs) ----------------------------------------------------------------

DIRECT = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from sglang.srt.entrypoints.openai.protocol import Function, Tool
from sglang.srt.function_call.lfm2_detector import Lfm2Detector
out = {}
for case in json.load(sys.stdin):
    tools = [Tool(type="function", function=Function(**t["function"])) for t in case["tools"]]
    result = Lfm2Detector().detect_and_parse(case["text"], tools)
    out[case["id"]] = [[c.name, c.parameters] for c in result.calls]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def measured(sglang_check_python) -> list[CaseResult]:
    return hard_calls.run(CASES)


@pytest.mark.timeout(600)
def test_the_probe_returns_what_sglangs_detector_returns(measured, sglang_check_python):
    job = [{"id": c.id, "text": c.text, "tools": list(c.tools)} for c in CASES]
    done = subprocess.run([sglang_check_python, "-c", DIRECT], input=json.dumps(job),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    direct = json.loads(done.stdout.splitlines()[-1])
    for r in (r for r in measured if r.engine == "sglang"):
        assert [list(c) for c in r.whole.calls] == direct[r.case.id], r.case.id
        assert "".join(r.pieces) == r.case.text and len(r.pieces) > 5, r.case.id


@pytest.mark.timeout(600)
def test_both_engines_were_fed_the_same_pieces(measured):
    by_engine = {(r.engine, r.case.id): r.pieces for r in measured}
    assert {e for e, _ in by_engine} == {"sglang", "vllm"}
    for c in CASES:
        assert by_engine["sglang", c.id] == by_engine["vllm", c.id], c.id


@pytest.mark.timeout(600)
def test_what_the_pinned_parsers_do(measured):
    """The notebook's claims, as measured on sglang 0.5.23 and vLLM 0.32 (the CPU build)."""
    grid = {k: o.label for k, o in hard_calls.outcomes(measured).items()}
    for c in ("plain", "dotted_name", "json_literals", "plus_sign", "set", "f_string", "kwargs"):
        assert grid[c, "sglang", "whole"] == grid[c, "sglang", "streamed"] == "parsed", c
    assert grid["overflow", "sglang", "whole"] == grid["positional", "sglang", "whole"] == "dropped"
    assert grid["overflow", "vllm", "whole"] == "not JSON"
    assert (
        grid["positional", "vllm", "whole"] == grid["kwargs", "vllm", "whole"] == "wrong arguments"
    )
    assert grid["broken_sibling", "sglang", "whole"] == "one call lost"
    assert grid["broken_sibling", "vllm", "whole"] == "text in content"
