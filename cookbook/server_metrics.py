"""The server's own clocks: means of an engine's latency histograms between two /metrics scrapes.

vLLM (its CPU build included) exports Prometheus histograms of what it timed itself, and SGLang
does the same under the same names with its own prefix (`sglang:...`) when launched with
`--enable-metrics` (its CPU launch here adds it; the verified cells do not). A scrape
before and one after a benchmark run give, from the deltas of each histogram's `_sum` and
`_count`, the server-side mean over exactly the requests of that run (summed over label sets:
engines, model names). What the server's clocks cover (vLLM 0.32, vllm/v1/metrics/stats.py):

- `vllm:time_to_first_token_seconds`: from the request's arrival in the engine client (after
  the HTTP request was read, validated and its prompt rendered and tokenized) to the output
  handler's receipt of the first token; neither the HTTP parsing nor the first chunk's
  detokenization, serialization and transport back are in it;
- `vllm:request_time_per_output_token_seconds`: per request, (last token - first token) /
  (tokens - 1) on the engine core's clock;
- `vllm:inter_token_latency_seconds`: every gap between a request's consecutive tokens;
- `vllm:e2e_request_latency_seconds`: arrival to the finishing iteration.

Client-side figures of the same name are therefore expected to exceed TTFT and E2E by a
transport cost (the request in, the chunk out, the front end's work), not TPOT or ITL.
"""

from __future__ import annotations

from typing import Any

import httpx

# name in the result (our metric's name) -> the engine's histogram, without its prefix
SUFFIXES = {
    "ttft": "time_to_first_token_seconds",
    "tpot": "request_time_per_output_token_seconds",
    "itl": "inter_token_latency_seconds",
    "e2el": "e2e_request_latency_seconds",
}
HISTOGRAMS = {key: f"vllm:{suffix}" for key, suffix in SUFFIXES.items()}  # vLLM's names


def histograms(family: str = "vllm") -> dict[str, str]:
    """Our metric's name -> the histogram of the engine family ("vllm" or "sglang")."""
    return {key: f"{family}:{suffix}" for key, suffix in SUFFIXES.items()}


def histogram_totals(text: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of every histogram in a Prometheus text exposition, over all label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        entry = totals.setdefault(family.name, [0.0, 0.0])
        for sample in family.samples:
            if sample.name == family.name + "_sum":
                entry[0] += sample.value
            elif sample.name == family.name + "_count":
                entry[1] += sample.value
    return {name: (s, c) for name, (s, c) in totals.items()}


def counter_total(text: str, name: str) -> float:
    """A counter's value as exposed (e.g. `vllm:request_success_total`), summed over its label
    sets; 0 when the exposition has none."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def histogram_means(before: str, after: str, family: str = "vllm") -> dict[str, dict[str, Any]]:
    """Per metric: the count of observations between the two scrapes and their mean in ms (None
    when nothing was observed), from the `family` engine's histograms. A histogram missing from a
    scrape is an error: the figures would silently be zero."""
    first, last = histogram_totals(before), histogram_totals(after)
    out = {}
    for key, name in histograms(family).items():
        if name not in last:
            raise ValueError(f"no histogram {name} in the server's /metrics")
        s0, c0 = first.get(name, (0.0, 0.0))
        s1, c1 = last[name]
        count = round(c1 - c0)
        if count < 0:
            raise ValueError(f"{name} went backwards between scrapes (server restarted?)")
        out[key] = {
            "histogram": name,
            "count": count,
            "mean_ms": (s1 - s0) / count * 1000 if count else None,
        }
    return out


def scrape_if_exported(server_root: str, api_key: str | None) -> str | None:
    """/metrics, or None where the server exports none (SGLang without --enable-metrics: 404)."""
    try:
        return scrape(server_root, api_key)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise


def scrape(server_root: str, api_key: str | None, timeout_s: float = 30.0) -> str:
    """The text of the server's /metrics (the cookbook's servers want the key there too)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{server_root.rstrip('/')}/metrics", headers=headers, timeout=timeout_s)
    response.raise_for_status()
    return response.text
