"""A run's metrics from its request records. Numbers are only comparable when they are computed the
same way, so these follow `vllm bench serve` (where `sglang.benchmark.serving` differs, it says so):
- a request's clock starts once it holds a concurrency slot, so queueing is not in its TTFT;
- a *token chunk* is a streamed chunk with a non-empty `choices` list; the usage chunk and
  `[DONE]` are not (SGLang's E2E also runs to `[DONE]`);
- TTFT = first token chunk - start; E2E = last token chunk - start;
- ITL = gaps between consecutive token chunks, pooled over all requests (chunk-weighted);
- TPOT = (E2E - TTFT) / (output_tokens - 1) per request, requests with <= 1 token left out,
  then averaged over requests (request-weighted);
- output tokens come from the server's streamed usage (`stream_options.include_usage`); when a
  server sends none, the token-chunk count is used and the result says so;
- duration = first dispatch to last completion; throughputs divide by it;
- percentiles interpolate linearly (numpy's default), std is the population std, all in ms;
- concurrency = sum(E2E) / duration (SGLang's definition; vLLM does not print one);
- per-user output tok/s = 1000 / mean TPOT (the definition that reproduces the "Per-user gen"
  column of the published 8B-A1B tables: 1000 / 8.0 ms = 125 tok/s on H100).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cookbook.bench.requests import RequestRecord

PERCENTILES = (50, 90, 95, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")

# The conventions above, written into every result file.
CONVENTIONS = {
    "follows": "vllm bench serve",
    "ttft": "first chunk with choices, from the moment the request holds a concurrency slot",
    "e2el": "last chunk with choices (SGLang's client: up to [DONE], usage chunk included)",
    "itl": "gaps between chunks, pooled over requests",
    "tpot": "(e2el - ttft) / (output_tokens - 1), mean over requests with > 1 token",
    "output_tokens": "usage.completion_tokens from stream_options.include_usage",
    "input_tokens": "usage.prompt_tokens (chat template included); sglang uses dataset lengths",
    "per_user_output_throughput": "1000 / mean_tpot_ms",
    "concurrency": "sum(e2el) / duration (sglang.benchmark.serving's definition)",
    "percentiles": "linear interpolation; std is the population std",
}


@dataclass
class Distribution:
    mean: float
    median: float
    std: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values_s: Sequence[float]) -> Distribution | None:
        if not values_s:
            return None
        ms = sorted(v * 1000 for v in values_s)
        return cls(
            mean=statistics.fmean(ms),
            median=percentile(ms, 50),
            std=statistics.pstdev(ms),
            p90=percentile(ms, 90),
            p95=percentile(ms, 95),
            p99=percentile(ms, 99),
        )


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """numpy.percentile's default (linear) interpolation, on already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * p / 100
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class Metrics:
    duration_s: float
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    request_goodput: float | None
    good_requests: int | None
    concurrency: float
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    per_user_output_throughput: float | None
    ttft: Distribution | None
    tpot: Distribution | None
    itl: Distribution | None
    e2el: Distribution | None
    output_tokens_source: Literal["usage", "chunks", "mixed", "none"]
    input_tokens_source: Literal["usage", "dataset"]

    def flat(self) -> dict[str, Any]:
        """Field names as vLLM's result JSON uses them (mean_ttft_ms, p99_itl_ms, ...)."""
        out = {k: v for k, v in asdict(self).items() if k not in METRICS}
        out["duration"] = out.pop("duration_s")
        for name in METRICS:
            dist = getattr(self, name)
            for stat in ("mean", "median", "std", "p90", "p95", "p99"):
                out[f"{stat}_{name}_ms"] = getattr(dist, stat) if dist else None
        return out


def compute_metrics(
    records: Sequence[RequestRecord], duration_s: float, slo_ms: dict[str, float] | None = None
) -> Metrics:
    ok = [r for r in records if r.success]
    duration = max(duration_s, 1e-9)
    sources = {"usage" if r.output_tokens is not None else "chunks" for r in ok}
    out_source = "none" if not sources else sources.pop() if len(sources) == 1 else "mixed"
    in_source = "usage" if ok and all(r.prompt_tokens is not None for r in ok) else "dataset"
    total_in = sum((r.prompt_tokens if in_source == "usage" else r.input_len) or 0 for r in ok)
    total_out = sum(r.counted_output_tokens for r in ok)
    tpots = [t for r in ok if (t := r.tpot_s) is not None]
    tpot = Distribution.of(tpots)

    good = None
    if slo_ms:
        good = sum(1 for r in ok if _meets(r, slo_ms))

    # 1-second buckets from the first start: peak output tokens/s and peak requests in flight.
    peak_tokens, peak_requests = 0.0, 0
    if ok:
        t0 = min(r.start_s for r in ok)
        buckets: dict[int, int] = {}
        in_flight: dict[int, int] = {}
        for r in ok:
            per_chunk = r.counted_output_tokens / max(len(r.chunk_times_s), 1)
            for t in r.chunk_times_s:
                b = int(r.start_s - t0 + t)
                buckets[b] = buckets.get(b, 0) + per_chunk
            for b in range(int(r.start_s - t0), int(r.start_s - t0 + r.e2el_s) + 1):
                in_flight[b] = in_flight.get(b, 0) + 1
        peak_tokens = max(buckets.values(), default=0.0)
        peak_requests = max(in_flight.values(), default=0)

    return Metrics(
        duration_s=duration_s,
        completed=len(ok),
        failed=len(records) - len(ok),
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        request_throughput=len(ok) / duration,
        output_throughput=total_out / duration,
        total_token_throughput=(total_in + total_out) / duration,
        request_goodput=None if good is None else good / duration,
        good_requests=good,
        concurrency=sum(r.e2el_s for r in ok) / duration,
        max_output_tokens_per_s=float(peak_tokens),
        max_concurrent_requests=peak_requests,
        per_user_output_throughput=1000 / tpot.mean if tpot and tpot.mean > 0 else None,
        ttft=Distribution.of([r.ttft_s for r in ok]),
        tpot=tpot,
        itl=Distribution.of([gap for r in ok for gap in r.itl_s]),
        e2el=Distribution.of([r.e2el_s for r in ok]),
        output_tokens_source=out_source,
        input_tokens_source=in_source,
    )


def _meets(r: RequestRecord, slo_ms: dict[str, float]) -> bool:
    values = {"ttft": r.ttft_s * 1000, "e2el": r.e2el_s * 1000}
    tpot = r.tpot_s
    values["tpot"] = tpot * 1000 if tpot is not None else 0.0
    return all(values[k] <= limit for k, limit in slo_ms.items())
