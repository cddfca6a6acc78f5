"""Reading result files, ours and the reference tools', into one set of field names, and showing
runs side by side: a comparison is only fair once every tool's numbers are named alike."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cookbook.bench.config import BenchError
from cookbook.paths import REPO_ROOT
from cookbook.results import RESULTS_ENV

SUMMARY_FIELDS = (
    "completed", "failed", "duration", "request_throughput", "output_throughput",
    "total_token_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
    "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_e2el_ms",
    "median_e2el_ms", "p99_e2el_ms", "per_user_output_throughput",
)  # fmt: skip


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result file of this harness, of `vllm bench serve --save-result`, or of
    `sglang.benchmark.serving --output-file` (JSONL; the last run), into one set of field names."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"{path}: empty result file") from None
        data = json.loads(lines[-1])
    if not isinstance(data, dict) or "output_throughput" not in data:
        raise BenchError(f"{path}: not a benchmark result (no output_throughput)")
    if data.get("backend") == "lfm25-cookbook":
        tool = "cookbook"
    elif "mean_e2e_latency_ms" in data or "total_throughput" in data:
        tool = "sglang.benchmark.serving"
    else:
        tool = "vllm bench serve"
    out = {"tool": tool, "source": str(path)}
    renames = {f"{s}_e2e_latency_ms": f"{s}_e2el_ms" for s in ("mean", "median", "p99")}
    renames["total_throughput"] = "total_token_throughput"
    for key, value in data.items():
        out.setdefault(renames.get(key, key), value)
    if out.get("failed") is None and "completed" in out and "num_prompts" in data:
        out["failed"] = data["num_prompts"] - data["completed"]
    if out.get("per_user_output_throughput") is None and out.get("mean_tpot_ms"):
        out["per_user_output_throughput"] = 1000 / out["mean_tpot_ms"]
    return {k: out.get(k) for k in ("tool", "source", *SUMMARY_FIELDS)}


def summary_table(rows: dict[str, dict[str, Any]], fields: Sequence[str] | None = None) -> str:
    """A plain-text table, one column per run."""
    fields = fields or [
        "completed", "failed", "output_throughput", "total_token_throughput",
        "per_user_output_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
        "p99_tpot_ms", "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms",
    ]  # fmt: skip
    names = list(rows)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'metric':<28}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for f in fields:
        cells = []
        for n in names:
            v = rows[n].get(f)
            text = "-" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v)
            cells.append(f"{text:>{width + 2}}")
        lines.append(f"{f:<28}" + "".join(cells))
    return "\n".join(lines)


def results_dir(given: str | Path | None = None) -> Path:
    """Where a notebook's benchmark files go: `given`; else, under `cookbook run`, beside the
    executed notebooks (runs/latest/bench); else runs/bench in the cookbook's folder. Never a
    path relative to the kernel's working directory, which is notebooks/."""
    if given:
        return Path(given)
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).parent / "bench"
    return REPO_ROOT / "runs" / "bench"
