"""The benchmark plots: a run on the CPU path carries its caption on the figure itself."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from cookbook.bench import plots  # noqa: E402

SWEEP = [
    {"max_concurrency": c, "output_throughput": 10.0 * c, "total_token_throughput": 20.0 * c,
     "per_user_output_throughput": 5.0 + c}
    for c in (1, 2, 4)
]  # fmt: skip


def _text(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_every_plot_can_carry_the_cpu_caption_and_none_has_it_by_default():
    run = {"median_ttft_ms": 5.0, "p99_ttft_ms": 9.0, "median_tpot_ms": 2.0, "p99_tpot_ms": 3.0,
           "total_token_throughput": 100.0}  # fmt: skip
    made = [
        lambda caption: plots.throughput_vs_concurrency(SWEEP, "t", caption),
        lambda caption: plots.per_user_vs_total(SWEEP, caption=caption),
        lambda caption: plots.latency_percentiles({"one": run}, caption),
        lambda caption: plots.yours_vs_published(
            run, {"total_token_throughput": 90.0}, "label", caption=caption
        ),
    ]
    for make in made:
        assert "not a performance figure" in _text(make(plots.CPU_CAPTION))
        assert "not a performance figure" not in _text(make(None))
    matplotlib.pyplot.close("all")
