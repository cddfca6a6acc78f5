"""Plots of benchmark results (matplotlib). Each function takes result dicts (BenchRun.result()
or bench.load_result()) and returns the figure, so a notebook shows it and a script saves it.
Not imported by `cookbook.bench` itself: the CLI and scripts need no matplotlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

Result = Mapping[str, Any]

# Under every plot of a run on the CPU path: what such a plot can and cannot show.
CPU_CAPTION = (
    "Measured on this machine's CPU with a tiny fixture model, not LFM2.5 on a GPU: it shows the "
    "harness working, not a performance figure. A tiny model on a few cores is bound by "
    "per-request overheads, so batching costs it little: per-user speed can even rise with "
    "concurrency here, which a loaded GPU does not show."
)


def _finish(fig: plt.Figure, caption: str | None) -> plt.Figure:
    """Lay the figure out, with `caption` (if any) wrapped under the axes."""
    fig.tight_layout()
    if caption:
        import textwrap

        lines = textwrap.wrap(caption, width=int(fig.get_figwidth() * 15))
        fig.subplots_adjust(bottom=0.18 + 0.045 * len(lines))
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, style="italic", va="bottom")
    return fig


def throughput_vs_concurrency(
    sweep: Sequence[Result], title: str = "", caption: str | None = None
) -> plt.Figure:
    """Output and total token throughput against max concurrency (one result per level)."""
    levels = [r["max_concurrency"] for r in sweep]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(levels, [r["output_throughput"] for r in sweep], "o-", label="output tok/s")
    ax.plot(levels, [r["total_token_throughput"] for r in sweep], "s--", label="total tok/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max concurrency")
    ax.set_ylabel("tokens / s")
    ax.set_title(title or "Throughput vs concurrency")
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, caption)


def latency_percentiles(runs: Mapping[str, Result], caption: str | None = None) -> plt.Figure:
    """TTFT and TPOT at the median, p90, p95 and p99, one bar group per run."""
    stats = ("median", "p90", "p95", "p99")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(len(runs), 1)
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        for i, (name, r) in enumerate(runs.items()):
            values = [r.get(f"{s}_{metric}_ms") or 0 for s in stats]
            ax.bar([x + i * width for x in range(len(stats))], values, width, label=name)
        ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(stats))], stats)
        ax.set_ylabel("ms")
        ax.set_title(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _finish(fig, caption)


def per_user_vs_total(
    sweep: Sequence[Result], title: str = "", caption: str | None = None
) -> plt.Figure:
    """The serving trade-off: each user's speed (1000 / mean TPOT) against the server's total."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["output_throughput"] for r in sweep]
    ys = [r.get("per_user_output_throughput") or 0 for r in sweep]
    ax.plot(xs, ys, "o-")
    for r, x, y in zip(sweep, xs, ys, strict=True):
        ax.annotate(f"c={r['max_concurrency']}", (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("output tok/s (server)")
    ax.set_ylabel("output tok/s per user")
    ax.set_title(title or "Per-user speed vs total throughput")
    ax.grid(alpha=0.3)
    return _finish(fig, caption)


def yours_vs_published(
    yours: Result,
    published: Mapping[str, float],
    label: str,
    metrics: Sequence[str] | None = None,
    caption: str | None = None,
) -> plt.Figure:
    """Your run's figures beside a published cell, metric by metric (each on its own axis: the
    units differ), with the published source in the title."""
    metrics = [m for m in (metrics or published) if m in published]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        ax.bar(["yours", "published"], [yours.get(m) or 0, published[m]], color=["C0", "C7"])
        ax.set_title(m, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(label, fontsize=9)
    return _finish(fig, caption)
