"""Hard tool calls through the engines' own `lfm2` parsers, no server needed (notebook 03).

The cases (data/hard-calls.yaml) are raw model texts. Each installed engine's parser runs in that
engine's own Python (cookbook/engine_side/lfm2_call_probe.py): SGLang's from the environment
its servers launch from (machine.sglang_python), vLLM's from the CPU build's environment
(launch_plans.cpu_engine_python). An engine that is not installed is skipped, with a sentence
saying so. What a parser returned is then judged here, path by path, into one `Outcome` with
what a client should do about it; nothing about the outcome is written in the data.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from cookbook import launch_plans, machine
from cookbook.errors import BadInputError, CookbookError
from cookbook.paths import DATA_DIR, ENGINE_SIDE_DIR

CASES_PATH = DATA_DIR / "hard-calls.yaml"
PROBE = ENGINE_SIDE_DIR / "lfm2_call_probe.py"
CALL_START = "<|tool_call_start|>"
FIELDS = ("id", "shows", "tools", "text", "means")
ENGINES = {"sglang": "SGLang", "vllm": "vLLM"}
PATHS = {"whole": "not streamed", "streamed": "streamed"}
INSTALL = {
    "sglang": "`bash ci/setup.sh sglang` installs it into .venvs/sglang",
    "vllm": "`bash ci/setup.sh cpu-engine` installs vLLM's CPU build into .venvs/cpu-engine",
}


class HardCallsDataError(BadInputError, ValueError):
    """The cases file is malformed; the message names the case and the field."""


class ProbeError(CookbookError, RuntimeError):
    """An engine's probe failed or timed out; the message ends with its stderr."""


@dataclass(frozen=True)
class Case:
    id: str
    shows: str
    tools: tuple[dict, ...]  # OpenAI tool objects, as a request carries them
    text: str  # the raw model output, special tokens included
    means: tuple[dict, ...] | None  # [{name, arguments}] the model meant; None: no JSON reading


@dataclass(frozen=True)
class Outcome:
    label: str
    advice: str  # what a client should do with it


OUTCOMES = {
    "parsed": Outcome("parsed", "use it"),
    "wrong": Outcome("wrong arguments", "valid JSON, but not what the model wrote: check the "
                     "arguments against the tool's schema before running it"),
    "not_json": Outcome("not JSON", "the arguments are not JSON (Python's json.loads lets "
                        "Infinity and NaN through, strict parsers fail): answer the call with an "
                        "error result, or re-ask"),
    "lost_one": Outcome("one call lost", "the other calls come back and nothing in the response "
                        "says one is missing (only the server's log does)"),
    "dropped": Outcome("dropped", "no call, no error, no trace in content: only the server's log "
                       "says why. Re-ask if a call was expected"),
    "in_content": Outcome("text in content", f"no call; the raw block is in content: look for "
                          f"{CALL_START} there, then re-ask"),
    "raised": Outcome("parser raised", "the request fails with a server error: retry or re-ask"),
}  # fmt: skip


def strict_json(text: str):
    """json.loads as a strict JSON parser reads it: Infinity, -Infinity and NaN are errors."""

    def refuse(constant: str):
        raise json.JSONDecodeError(f"{constant} is not JSON", text, text.find(constant))

    return json.loads(text, parse_constant=refuse)


@dataclass(frozen=True)
class PathResult:
    """One parser path (not streamed, or streamed and merged) on one case."""

    calls: tuple[tuple[str, str], ...]  # (name, arguments as the engine returned them)
    content: str
    error: str | None
    warnings: tuple[str, ...]

    def outcome(self, case: Case) -> Outcome:
        if self.error:
            return OUTCOMES["raised"]
        if not self.calls:
            return OUTCOMES["in_content" if CALL_START in self.content else "dropped"]
        try:
            got = [{"name": n, "arguments": strict_json(a)} for n, a in self.calls]
        except json.JSONDecodeError:
            return OUTCOMES["not_json"]
        meant = list(case.means) if case.means is not None else got
        if got == meant:
            return OUTCOMES["parsed"]
        if len(got) < len(meant) and all(call in meant for call in got):
            return OUTCOMES["lost_one"]
        return OUTCOMES["wrong"]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    engine: str  # "sglang" or "vllm"
    version: str
    pieces: tuple[str, ...]  # the token-sized pieces the streaming path was fed
    whole: PathResult
    streamed: PathResult


def load_cases(path: Path = CASES_PATH) -> list[Case]:
    data = yaml.safe_load(Path(path).read_text())
    tools = data.get("tools") or {}
    cases = []
    for n, raw in enumerate(data.get("cases") or []):
        where = f"{path}: case {raw.get('id', n)!r}"
        missing = [f for f in FIELDS if f not in raw]
        if missing:
            raise HardCallsDataError(f"{where} has no {', '.join(missing)} (needs {FIELDS})")
        unknown = [t for t in raw["tools"] if t not in tools]
        if unknown:
            raise HardCallsDataError(f"{where} offers tools not under tools: {unknown}")
        offered = tuple({"type": "function", "function": {"name": t, **tools[t]}}
                        for t in raw["tools"])  # fmt: skip
        means = None if raw["means"] is None else tuple(raw["means"])
        cases.append(Case(raw["id"], raw["shows"], offered, raw["text"], means))
    return cases


def engine_python(engine: str) -> Path | None:
    """The Python of the engine's own environment, found as its launches find it, or None."""
    python = machine.sglang_python() if engine == "sglang" else launch_plans.cpu_engine_python()
    return python if python and python.exists() else None


def probe(engine: str, python: Path, cases: list[Case], timeout_s: float = 300) -> list[CaseResult]:
    texts = [{"id": c.id, "text": c.text, "tools": list(c.tools)} for c in cases]
    job = {"tokenizer": str(launch_plans.fixture_path("instruct")), "cases": texts}
    try:
        done = subprocess.run([str(python), str(PROBE), engine], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr or ""
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        raise ProbeError(f"{engine}'s probe ran past {timeout_s:.0f} s:\n{stderr[-3000:]}") from exc
    if done.returncode != 0:
        raise ProbeError(f"{engine}'s probe failed (exit {done.returncode}), {python}:\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    out = json.loads(done.stdout.strip().splitlines()[-1])
    by_id = {c.id: c for c in cases}

    def path(raw: dict) -> PathResult:
        calls = tuple((name, args) for name, args in raw["calls"])
        return PathResult(calls, raw["content"], raw["error"], tuple(raw["warnings"]))

    return [CaseResult(by_id[r["id"]], engine, out["version"], tuple(r["pieces"]),
                       path(r["whole"]), path(r["streamed"])) for r in out["results"]]  # fmt: skip


def run(cases: list[Case] | None = None, timeout_s: float = 300) -> list[CaseResult]:
    """Every case through every installed engine's parser; a missing engine is said and skipped."""
    cases = cases if cases is not None else load_cases()
    results = []
    for engine, name in ENGINES.items():
        python = engine_python(engine)
        if python is None:
            print(f"{name} is not installed here, so its columns are left out ({INSTALL[engine]}).")
            continue
        results += probe(engine, python, cases, timeout_s)
    return results


def outcomes(results: list[CaseResult]) -> dict[tuple[str, str, str], Outcome]:
    """(case id, engine, path) -> the outcome: what the notebook's asserts read."""
    return {(r.case.id, r.engine, p): getattr(r, p).outcome(r.case) for r in results for p in PATHS}


def table(results: list[CaseResult]) -> str:
    """Case x (engine, path) -> outcome, as plain text, then what each outcome means."""
    grid, versions = outcomes(results), {r.engine: r.version for r in results}
    cols = [(e, p) for e in versions for p in PATHS]
    engines = [""] + [f"{ENGINES[e]} {versions[e]}" if p == "whole" else "" for e, p in cols]
    rows = [engines, ["case"] + [PATHS[p] for _, p in cols]]
    rows += [
        [c] + [grid[c, e, p].label for e, p in cols] for c in dict.fromkeys(c for c, _, _ in grid)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rows.insert(2, ["-" * w for w in widths])
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines += ["", "what a client should do:"]
    return "\n".join(lines + [f"  {o.label}: {o.advice}" for o in dict.fromkeys(grid.values())])


def details(results: list[CaseResult]) -> str:
    """Per case: the text, then what each engine and path returned (calls or content, and the
    parser's error or last warning)."""
    lines = []
    for case in {r.case.id: r.case for r in results}.values():
        lines += ["", f"{case.id}: {case.shows}", f"  text: {case.text}"]
        for r in (r for r in results if r.case.id == case.id):
            for p in PATHS:
                got = getattr(r, p)
                said = [f"{n} {a}" for n, a in got.calls] or [f"content={got.content!r}"]
                why = f"  [{got.error or got.warnings[-1]}]" if got.error or got.warnings else ""
                lines.append(f"  {ENGINES[r.engine]:<6} {PATHS[p]:<12} {'; '.join(said)}{why}")
    return "\n".join(lines[1:])
