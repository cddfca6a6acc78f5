"""Published numbers (data/published-benchmarks.yaml) and how a run is set beside them: the data
file holds the figures and their sources, this module only the rules for comparing."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml

from cookbook.paths import DATA_DIR
from cookbook.recipes import load_recipes

PUBLISHED_DATA = DATA_DIR / "published-benchmarks.yaml"


def card_statistic() -> str:
    """How the card's TTFT and TPOT were recorded, in words, from each SGLang cookbook page's
    `latencyPercentile` (recipes.yaml pages.*.latency_statistic): "Mean" on both today, so the
    card is set beside our mean (our median is shown too)."""
    stats = [page.latency_statistic.lower() for page in load_recipes().pages.values()]
    if len(set(stats)) > 1:
        return f"the {' or '.join(sorted(set(stats)))}, as each page records it"
    pages = {1: "its page records", 2: "both pages record"}.get(len(stats), "every page records")
    return f"the {stats[0]}, as {pages} it"


# What a run keeps to set beside the card (notebook 06 records them; `cookbook summary` shows them).
CARD_FIELDS = (
    "mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "total_token_throughput",
    "output_throughput",
)  # fmt: skip


@lru_cache(maxsize=1)
def published() -> dict[str, Any]:
    return yaml.safe_load(PUBLISHED_DATA.read_text())


def published_card(hw: str, variant: str) -> dict[str, dict[str, float]] | None:
    """The SGLang cookbook card's latency and throughput cells for (hw, variant), if published:
    `ttft_ms` and `tpot_ms` (means) and `total_token_throughput`."""
    card = published()["sglang_cookbook_card"]
    cell = card.get(hw, {}).get(variant)
    if cell is None:
        return None
    out = {}
    for workload, (ttft, tpot, tok_s) in zip(("latency", "throughput"), cell, strict=True):
        # the card's tok/s per GPU counts input + output tokens (see the data file)
        out[workload] = {"ttft_ms": ttft, "tpot_ms": tpot, "total_token_throughput": tok_s}
    return out


def card_comparison(result: dict[str, Any], card_cell: dict[str, float]) -> list[dict[str, Any]]:
    """Rows of (metric, published, ours): latencies against our mean (the card's statistic) and,
    for the spread, our median; throughput against ours."""
    rows = []
    for metric in ("ttft_ms", "tpot_ms"):
        rows.append({
            "metric": f"{metric} ({card_statistic()})",
            "published": card_cell[metric],
            "ours_mean": result.get(f"mean_{metric}"),
            "ours_median": result.get(f"median_{metric}"),
        })  # fmt: skip
    rows.append({
        "metric": "total_token_throughput (tok/s)",
        "published": card_cell["total_token_throughput"],
        "ours": result.get("total_token_throughput"),
    })  # fmt: skip
    return rows


def published_seed_004(hw: str) -> dict[str, dict[str, float]]:
    """The 8B-A1B deploy guide's cells for hw, per table (empty when that GPU is not in it)."""
    seed = published()["seed_004"]
    return {t: seed[t][hw] for t in ("table_1", "table_2") if hw in seed[t]}
