"""Serving benchmark: token-exact random prompts, an async streaming client, vLLM-style metrics.

Conventions (the same as `vllm bench serve`; where `sglang.benchmark.serving` differs, it says so):
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

import asyncio
import itertools
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from cookbook.errors import BadInputError
from cookbook.paths import DATA_DIR, REPO_ROOT

BENCH_DATA = DATA_DIR / "benchmarks.yaml"
PUBLISHED_DATA = DATA_DIR / "published-benchmarks.yaml"
PERCENTILES = (50, 90, 95, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
Endpoint = Literal["completions", "chat"]
RangeConvention = Literal["vllm", "sglang"]


class BenchError(BadInputError, ValueError):
    """A bad benchmark setting, named with what is valid."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    base_url: str  # the OpenAI base, e.g. http://127.0.0.1:30000/v1
    model: str
    api_key: str | None = None
    endpoint: Endpoint = "completions"
    input_len: int = 1024
    output_len: int = 128
    num_prompts: int = 100
    max_concurrency: int | None = None
    request_rate: float = math.inf  # requests/s; inf sends all at once (within max_concurrency)
    burstiness: float = 1.0  # gamma shape of the arrival gaps: 1 = Poisson, <1 burstier
    range_ratio: float = 0.0
    range_convention: RangeConvention = "vllm"
    warmup: int = 1
    ignore_eos: bool = True
    temperature: float = 0.0
    seed: int = 0
    request_timeout_s: float = 600.0
    run_timeout_s: float | None = None
    goodput_slo_ms: dict[str, float] = field(default_factory=dict)  # ttft / tpot / e2el
    preset: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
            ("http://", "https://")
        ):
            problems.append(f"base_url {self.base_url!r} (an http:// or https:// URL)")
        if self.endpoint not in ("completions", "chat"):
            problems.append(f"endpoint {self.endpoint!r} (valid: completions, chat)")
        for name in ("input_len", "output_len", "num_prompts"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} {getattr(self, name)!r} (must be >= 1)")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            problems.append(f"max_concurrency {self.max_concurrency!r} (>= 1, or None: no cap)")
        if not self.request_rate > 0:
            problems.append(f"request_rate {self.request_rate!r} (> 0; inf: all at once)")
        if not self.burstiness > 0:
            problems.append(f"burstiness {self.burstiness!r} (> 0; 1 is Poisson)")
        if self.range_convention not in ("vllm", "sglang"):
            problems.append(f"range_convention {self.range_convention!r} (valid: vllm, sglang)")
        elif self.range_convention == "vllm" and not 0 <= self.range_ratio < 1:
            problems.append(f"range_ratio {self.range_ratio!r} (vllm convention: 0 <= r < 1)")
        elif self.range_convention == "sglang" and not 0 <= self.range_ratio <= 1:
            problems.append(f"range_ratio {self.range_ratio!r} (sglang convention: 0 <= r <= 1)")
        if self.warmup < 0:
            problems.append(f"warmup {self.warmup!r} (>= 0)")
        unknown = set(self.goodput_slo_ms) - {"ttft", "tpot", "e2el"}
        if unknown:
            problems.append(f"goodput SLO {sorted(unknown)} (valid: ttft, tpot, e2el)")
        for name, limit in self.goodput_slo_ms.items():
            if not limit > 0:
                problems.append(f"goodput SLO {name}:{limit!r} (milliseconds > 0)")
        # Zero or negative is no "no timeout": it is refused (None is no run timeout).
        if not self.request_timeout_s > 0:
            problems.append(f"request_timeout_s {self.request_timeout_s!r} (seconds > 0)")
        if self.run_timeout_s is not None and not self.run_timeout_s > 0:
            problems.append(f"run_timeout_s {self.run_timeout_s!r} (seconds > 0, or None: none)")
        if problems:
            raise BenchError("bad benchmark settings: " + "; ".join(problems))

    @property
    def server_root(self) -> str:
        root = self.base_url.rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    @property
    def api_base(self) -> str:  # accepts the server root or its /v1 base
        return self.server_root + "/v1"


def length_bounds(length: int, ratio: float, convention: RangeConvention) -> tuple[int, int]:
    """Inclusive bounds of the sampled lengths.

    vllm:   U[L * (1 - r), L * (1 + r)]  (r = 0: fixed L; the default)
    sglang: U[max(1, L * r), L]          (r = 1: fixed L; SGLang's default r = 0 gives U[1, L])
    """
    if convention == "vllm":
        return max(1, int(length * (1 - ratio))), int(length * (1 + ratio))
    return max(1, int(length * ratio)), length


def sample_lengths(
    n: int, length: int, ratio: float, convention: RangeConvention, rng: random.Random
) -> list[int]:
    low, high = length_bounds(length, ratio, convention)
    return [rng.randint(low, high) for _ in range(n)]


# --------------------------------------------------------------------------- presets, published


@lru_cache(maxsize=1)
def _bench_data() -> dict[str, Any]:
    return yaml.safe_load(BENCH_DATA.read_text())


def preset_names() -> list[str]:
    return list(_bench_data()["presets"])


def preset(name: str, scale: Literal["gpu", "cpu"] = "gpu") -> dict[str, Any]:
    """A workload from data/benchmarks.yaml; `cpu` gives its scaled-down version."""
    presets = _bench_data()["presets"]
    if name not in presets:
        raise BenchError(f"unknown preset {name!r} (valid: {', '.join(presets)})")
    if scale not in ("gpu", "cpu"):
        raise BenchError(f"unknown scale {scale!r} (valid: gpu, cpu)")
    entry = dict(presets[name])
    cpu = entry.pop("cpu", {})
    entry.pop("source", None)
    return {**entry, **cpu} if scale == "cpu" else entry


def preset_source(name: str) -> str:
    preset(name)  # validates
    return _bench_data()["presets"][name].get("source", "")


@lru_cache(maxsize=1)
def published() -> dict[str, Any]:
    return yaml.safe_load(PUBLISHED_DATA.read_text())


# The card gives ttft_ms / tpot_ms without naming the statistic, and SGLang's cookbook-authoring
# docs say card latency is P50 unless marked "Mean": we could not settle which, so the card's
# figures are labelled "as published" and set beside both our mean and our median.
CARD_STATISTIC = "as published; the card does not say mean or median"
# What a run keeps to set beside the card (notebook 06 records them; `cookbook summary` shows them).
CARD_FIELDS = (
    "mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "total_token_throughput",
    "output_throughput",
)  # fmt: skip


def published_card(hw: str, variant: str) -> dict[str, dict[str, float]] | None:
    """The SGLang cookbook card's latency and throughput cells for (hw, variant), if published:
    `ttft_ms` and `tpot_ms` as published (statistic not stated) and `total_token_throughput`."""
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
    """Rows of (metric, published, ours): latencies against both our mean and our median, since
    the card does not say which statistic it publishes; throughput against ours."""
    rows = []
    for metric in ("ttft_ms", "tpot_ms"):
        rows.append({
            "metric": f"{metric} ({CARD_STATISTIC})",
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


# --------------------------------------------------------------------------- dataset


def _json_of(response: httpx.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise BenchError(
            f"{url} answered {response.status_code} with {kind}, not JSON: is the base URL an "
            "OpenAI-compatible server's (e.g. http://HOST:PORT/v1)?"
        ) from None


def check_server(config: BenchConfig, timeout_s: float = 30.0) -> int | None:
    """Before any prompt is built: the server answers, takes the key and serves the model.
    Returns its max_model_len (vLLM and SGLang list it in /v1/models; None if not given)."""
    url = f"{config.api_base}/models"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise BenchError(f"no server answered at {url} ({type(exc).__name__}: {exc})") from None
    if response.status_code in (401, 403):
        raise BenchError(
            f"{url} refused the API key (HTTP {response.status_code}): pass the server's key "
            "with --api-key or OPENAI_API_KEY"
        )
    if response.status_code != 200:
        raise BenchError(f"{url} answered HTTP {response.status_code}, not a list of models")
    data = _json_of(response, url)
    try:
        cards = {str(card["id"]): card for card in data["data"]}
    except (KeyError, TypeError):
        raise BenchError(f"{url} answered JSON that is not an OpenAI model list") from None
    if config.model not in cards:
        raise BenchError(f"{config.server_root} serves {sorted(cards)}, not {config.model!r}")
    limit = cards[config.model].get("max_model_len")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def check_lengths(config: BenchConfig, max_model_len: int | None) -> None:
    """Refuse a workload whose longest prompt plus output cannot fit the model's context: the
    server would cut every such request short (or build a huge prompt to reject)."""
    if max_model_len is None:
        return
    high_in = length_bounds(config.input_len, config.range_ratio, config.range_convention)[1]
    high_out = length_bounds(config.output_len, config.range_ratio, config.range_convention)[1]
    if high_in + high_out > max_model_len:
        raise BenchError(
            f"input up to {high_in} + output up to {high_out} tokens exceed {config.model}'s "
            f"max_model_len of {max_model_len}: lower --input-len / --output-len"
        )


def check_out_path(path: str | Path) -> Path:
    """Fail before a run, not after it: the result file and its .requests.jsonl beside it must
    be files this process can write (made and removed here if they do not exist yet)."""
    path = Path(path).expanduser()
    if not path.name or path.is_dir():
        raise BenchError(f"--out {str(path)!r} is a directory: give a file, e.g. results/run.json")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise BenchError(f"--out {str(path)!r}: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target in (path, path.with_suffix(".requests.jsonl")):
            existed = target.exists()
            with target.open("a"):
                pass
            if not existed:
                target.unlink()
    except OSError as exc:
        raise BenchError(
            f"--out {str(path)!r}: cannot write there ({exc.strerror or exc})"
        ) from None
    return path


class ServerTokenizer:
    """The server's own tokenizer through its /tokenize and /detokenize endpoints (vLLM and
    SGLang both serve them at the root), so prompt lengths are exact for the model served."""

    def __init__(self, config: BenchConfig, timeout_s: float = 30.0):
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(base_url=config.server_root, headers=headers, timeout=timeout_s)
        self._model = config.model
        self.vocab_size = self._vocab_size()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json={"model": self._model, **body})
        except httpx.HTTPError as exc:
            raise BenchError(f"{path} on {self._client.base_url}: {exc}") from None
        if response.status_code != 200:
            text = " ".join(response.text[:300].split())
            raise BenchError(
                f"{path} on {self._client.base_url} answered {response.status_code}: "
                f"{text} (the benchmark needs the server's tokenize endpoints)"
            )
        return _json_of(response, f"{self._client.base_url}{path}")

    def encode(self, text: str) -> list[int]:
        return list(
            self._post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
        )

    def decode(self, ids: Sequence[int]) -> str:
        answer = self._post("/detokenize", {"tokens": list(ids)})
        return answer["prompt"] if "prompt" in answer else answer["text"]  # vLLM / SGLang

    def _vocab_size(self) -> int:
        # The largest id a long, varied text maps to bounds the ordinary vocabulary from below;
        # ids are then drawn from the range the text itself produced (no special tokens).
        probe = " ".join(f"{w}{i}" for i, w in enumerate(_WORDS * 4))
        return max(self.encode(probe)) + 1

    def close(self) -> None:
        self._client.close()


_WORDS = (  # noqa: SIM905 - one readable block of common words
    "the of and to in is was for on that with as by at from his an were are which this be has "
    "or had not but first one their its new after who they have her she two been other when "
    "there all during into school time may years more most only over city some world would where "
    "later up such used many can state about national out known university united then made"
).split()


def single_token_words(tokenizer: Any, rng: random.Random, want: int = 256) -> list[str]:
    """Words (a space, then letters) that the tokenizer keeps as exactly one token each.

    Byte-level BPE splits text at spaces before merging, so a string of such words encodes to one
    token per word: prompts of an exact length without decode/re-encode drift.
    """
    pool: list[str] = []
    candidates = list(range(tokenizer.vocab_size))
    rng.shuffle(candidates)
    for token_id in candidates:
        text = tokenizer.decode([token_id])
        if len(text) > 2 and text[0] == " " and text[1:].isascii() and text[1:].isalpha():
            pool.append(text)
            if len(pool) >= want * 2:
                break
    if not pool:
        raise BenchError("the tokenizer has no single-token words to build prompts from")
    # One encode checks them all: keep the words that stayed one token in running text.
    ids = tokenizer.encode("".join(pool))
    if len(ids) == len(pool):
        return pool[:want]
    return [w for w in pool if len(tokenizer.encode(w)) == 1][:want]


def token_exact_prompt(tokenizer: Any, length: int, rng: random.Random, words: list[str]) -> str:
    """A text of `length` single-token words; checked against the tokenizer, never assumed."""
    text = "".join(rng.choice(words) for _ in range(length))
    got = len(tokenizer.encode(text))
    if got != length:
        raise BenchError(f"a prompt meant to be {length} tokens encodes to {got}")
    return text


@dataclass(frozen=True)
class Prompt:
    text: str
    input_len: int  # tokens of the text itself (no chat template, no BOS)
    output_len: int


def build_dataset(config: BenchConfig, tokenizer: Any) -> list[Prompt]:
    rng = random.Random(config.seed)
    n = config.num_prompts + config.warmup
    ins = sample_lengths(n, config.input_len, config.range_ratio, config.range_convention, rng)
    outs = sample_lengths(n, config.output_len, config.range_ratio, config.range_convention, rng)
    words = single_token_words(tokenizer, random.Random(config.seed))
    return [
        Prompt(token_exact_prompt(tokenizer, i, rng, words), i, o)
        for i, o in zip(ins, outs, strict=True)
    ]


# --------------------------------------------------------------------------- metrics


@dataclass
class RequestRecord:
    index: int
    input_len: int  # dataset tokens
    output_len_requested: int
    success: bool = False
    error: str = ""
    start_s: float = 0.0  # perf_counter when the request got its slot
    queue_s: float = 0.0  # time waiting for a slot
    ttft_s: float = 0.0
    e2el_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    token_chunks: int = 0
    output_tokens: int | None = None  # from the server's usage
    prompt_tokens: int | None = None  # from the server's usage (includes any chat template)
    chunk_times_s: list[float] = field(default_factory=list)  # relative to start_s

    @property
    def counted_output_tokens(self) -> int:
        return self.output_tokens if self.output_tokens is not None else self.token_chunks

    @property
    def tpot_s(self) -> float | None:
        n = self.counted_output_tokens
        return (self.e2el_s - self.ttft_s) / (n - 1) if self.success and n > 1 else None


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


# --------------------------------------------------------------------------- the client


_TOKEN_CHUNK = b'"choices":[{'
_USAGE = b'"usage":{'


def _scan(messages: list[bytes], record: RequestRecord) -> int:
    """Count the token chunks among complete SSE messages; take usage from the one that has it.

    The common chunk is recognised without parsing its JSON (compact JSON with a non-empty
    `choices` and no usage): that is what lets one core ingest a fast GPU's streams. Anything
    else (usage, unusual spacing) is parsed."""
    n = 0
    for message in messages:
        if _TOKEN_CHUNK in message and _USAGE not in message:
            n += 1
            continue
        if not message.startswith(b"data:"):
            continue  # SSE comments and keep-alives
        payload = message[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        data = json.loads(payload)
        if not isinstance(data, dict):
            continue
        if data.get("error"):  # a server failing mid-stream says so in a data message
            error = data["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            record.error = f"the server reported an error mid-stream: {text}"[:500]
        if data.get("choices"):
            n += 1
        usage = data.get("usage")
        if usage:
            record.output_tokens = usage.get("completion_tokens")
            record.prompt_tokens = usage.get("prompt_tokens")
    return n


def request_body(config: BenchConfig, prompt: Prompt) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": prompt.output_len,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.ignore_eos:
        body["ignore_eos"] = True
    if config.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    return body


async def _one_request(session, url: str, headers, config, prompt, record, semaphore) -> None:
    import aiohttp

    queued = time.perf_counter()
    async with semaphore:
        st = time.perf_counter()
        record.start_s, record.queue_s = st, st - queued
        times = record.chunk_times_s  # seconds after st, one entry per token chunk
        pending = b""
        try:
            async with session.post(
                url, json=request_body(config, prompt), headers=headers
            ) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:500]
                    record.error = f"HTTP {resp.status}: {text}"
                    return
                async for data in resp.content.iter_any():
                    # Chunks that arrive in one read share its timestamp: they did arrive together.
                    now = time.perf_counter() - st
                    messages = (pending + data if pending else data).split(b"\n\n")
                    pending = messages.pop()
                    n = _scan(messages, record)
                    if n:
                        times.extend([now] * n)
                if pending.strip():
                    n = _scan([pending], record)
                    times.extend([time.perf_counter() - st] * n)
            if record.error:  # reported inside the stream
                return
            if not times:
                record.error = "the stream ended without a token chunk"
                return
            record.token_chunks = len(times)
            record.ttft_s, record.e2el_s = times[0], times[-1]
            record.itl_s = [b - a for a, b in itertools.pairwise(times)]
            got = record.output_tokens  # usage only: a chunk may carry several tokens
            if config.ignore_eos and got is not None and got < prompt.output_len:
                # With ignore_eos only a limit ends a stream early: the context, or a max_tokens
                # the server lowered. Its numbers would flatter the run: a failure, with why.
                record.error = (
                    f"cut off: {got} of {prompt.output_len} output tokens with ignore_eos on "
                    "(prompt + output past the model's context, or max_tokens lowered)"
                )
                return
            record.success = True
        except asyncio.CancelledError:
            record.error = record.error or "cancelled before it finished"
            raise
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:500]


@dataclass
class BenchRun:
    config: BenchConfig
    records: list[RequestRecord]
    duration_s: float
    metrics: Metrics
    interrupted: str | None = None  # why the run ended early, if it did
    warmup_errors: list[str] = field(default_factory=list)
    started_at: str = ""

    def result(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg.pop("api_key")
        effective_in = [r.input_len for r in self.records]
        effective_out = [r.output_len_requested for r in self.records]
        errors: dict[str, int] = {}
        for r in self.records:
            if not r.success:
                errors[r.error] = errors.get(r.error, 0) + 1
        return {
            "date": self.started_at,
            "backend": "lfm25-cookbook",
            "endpoint_type": self.config.endpoint,
            "model_id": self.config.model,
            "base_url": self.config.base_url,
            "preset": self.config.preset,
            "num_prompts": self.config.num_prompts,
            "request_rate": "inf" if math.isinf(self.config.request_rate) else cfg["request_rate"],
            "burstiness": self.config.burstiness,
            "max_concurrency": self.config.max_concurrency,
            "random_input_len": self.config.input_len,
            "random_output_len": self.config.output_len,
            "random_range_ratio": self.config.range_ratio,
            "range_convention": self.config.range_convention,
            "effective_input_len": _span(effective_in),
            "effective_output_len": _span(effective_out),
            "ignore_eos": self.config.ignore_eos,
            "goodput_slo_ms": self.config.goodput_slo_ms,
            "interrupted": self.interrupted,
            "warmup_errors": self.warmup_errors,
            "errors": errors,
            **self.metrics.flat(),
            "conventions": CONVENTIONS,
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write the run's JSON and, beside it, a JSONL with one line per request."""
        path = check_out_path(path)
        path.write_text(json.dumps(self.result(), indent=2) + "\n")
        lines = path.with_suffix(".requests.jsonl")
        with lines.open("w") as f:
            for r in self.records:
                row = asdict(r)
                row.pop("chunk_times_s")
                f.write(json.dumps(row) + "\n")
        return path, lines


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


def _span(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0, "max": 0}
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="requests", unit="req")

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _run_async(config, prompts, records, state, progress) -> None:
    import aiohttp

    path = "chat/completions" if config.endpoint == "chat" else "completions"
    url = f"{config.api_base}/{path}"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    # One session, kept-alive connections (TCP connect stays out of TTFT), a big read buffer
    # (aiohttp's 64 KiB default slows long responses), no connection cap of aiohttp's own.
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=2**20
    ) as session:
        warm = prompts[: config.warmup]
        for i, prompt in enumerate(warm):
            rec = RequestRecord(-1 - i, prompt.input_len, prompt.output_len)
            await _one_request(session, url, headers, config, prompt, rec, asyncio.Semaphore(1))
            if not rec.success:
                state["warmup_errors"].append(rec.error)
        if warm and len(state["warmup_errors"]) == len(warm):
            raise BenchError(f"every warmup request failed: {state['warmup_errors'][0]}")

        if state.get("on_measure_start"):
            state["on_measure_start"]()
        semaphore = asyncio.Semaphore(config.max_concurrency or len(records))
        rng = random.Random(config.seed + 1)
        tasks = []
        state["t0"] = time.perf_counter()
        for prompt, rec in zip(prompts[config.warmup :], records, strict=True):
            task = asyncio.create_task(
                _one_request(session, url, headers, config, prompt, rec, semaphore)
            )
            task.add_done_callback(lambda _t: progress.update())
            tasks.append(task)
            if not math.isinf(config.request_rate):
                shape = config.burstiness
                await asyncio.sleep(rng.gammavariate(shape, 1 / (config.request_rate * shape)))
        state["tasks"] = tasks
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=config.run_timeout_s)
        except TimeoutError:
            state["interrupted"] = f"run timeout of {config.run_timeout_s} s"
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        state["t1"] = time.perf_counter()


def _run_coroutine(make: Callable[[], Any]) -> None:
    """asyncio.run, also from inside Jupyter (whose kernel already runs an event loop): there the
    benchmark gets its own loop in a worker thread, and an interrupt cancels it cleanly."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    import threading

    loop = asyncio.new_event_loop()
    outcome: dict[str, BaseException] = {}
    ready = threading.Event()
    task: list[asyncio.Task] = []

    def worker() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(make()))
        ready.set()
        try:
            loop.run_until_complete(task[0])
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=worker, name="bench-loop", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(30)
        raise
    error = outcome.get("error")
    if error is not None and not isinstance(error, asyncio.CancelledError):
        raise error


def run_benchmark(
    config: BenchConfig,
    *,
    tokenizer: Any | None = None,
    prompts: list[Prompt] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_measure_start: Callable[[], None] | None = None,
) -> BenchRun:
    """Run one benchmark and return its records and metrics. Ctrl-C or a run timeout ends it
    early; the requests finished so far are kept and the run says why it ended.
    `on_measure_start` is called once the warm-up requests are done, before the run's clock
    starts (benchmarks/fidelity.py scrapes the server's /metrics there)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    if prompts is None:
        check_lengths(config, check_server(config))
        own = tokenizer is None
        tokenizer = tokenizer or ServerTokenizer(config)
        try:
            prompts = build_dataset(config, tokenizer)
        finally:
            if own:
                tokenizer.close()
    if len(prompts) != config.num_prompts + config.warmup:
        raise BenchError(
            f"{len(prompts)} prompts for {config.num_prompts} requests + {config.warmup} warmup"
        )
    measured = prompts[config.warmup :]
    log(
        f"[bench] {config.num_prompts} requests to {config.endpoint}, input "
        f"{_fmt_span(_span([p.input_len for p in measured]))} tokens, output "
        f"{_fmt_span(_span([p.output_len for p in measured]))} tokens "
        f"({config.range_convention} range convention, ratio {config.range_ratio}), "
        f"max concurrency {config.max_concurrency or 'none'}, request rate {config.request_rate}"
    )
    records = [RequestRecord(i, p.input_len, p.output_len) for i, p in enumerate(measured)]
    state: dict[str, Any] = {
        "warmup_errors": [], "interrupted": None, "on_measure_start": on_measure_start,
    }  # fmt: skip
    bar = _Progress(config.num_prompts, progress)
    try:
        _run_coroutine(lambda: _run_async(config, prompts, records, state, bar))
    except KeyboardInterrupt:
        state["interrupted"] = "interrupted (Ctrl-C)"
    finally:
        bar.close()
    for r in records:
        if not r.success and not r.error:
            r.error = "not sent or not finished: " + (state["interrupted"] or "run ended")
    t0 = state.get("t0", time.perf_counter())
    duration = state.get("t1", time.perf_counter()) - t0
    metrics = compute_metrics(records, duration, config.goodput_slo_ms or None)
    run = BenchRun(config, records, duration, metrics, state["interrupted"], state["warmup_errors"])
    run.started_at = started_at
    if metrics.output_tokens_source != "usage" and metrics.completed:
        log(
            "[bench] note: the server sent no usage chunk for some requests; their output "
            "tokens are counted as streamed chunks (exact only with one token per chunk)"
        )
    if metrics.failed:
        log(f"[bench] {metrics.failed} of {len(records)} requests failed: {run.result()['errors']}")
    return run


def _fmt_span(span: dict[str, float]) -> str:
    if span["min"] == span["max"]:
        return f"{span['min']}"
    return f"{span['min']}-{span['max']} (mean {span['mean']:.0f})"


# --------------------------------------------------------------------------- reading results


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


# --------------------------------------------------------------------------- reference harnesses

VLLM_BENCH_SHIM = REPO_ROOT / "ci" / "bench" / "vllm_bench_serve.py"


SGLANG_BENCH_SHIM = VLLM_BENCH_SHIM.parent / "sglang_bench_serving.py"


def write_prompts_jsonl(
    prompts: Sequence[Prompt], path: str | Path, style: Literal["vllm", "sglang"] = "vllm"
) -> Path:
    """The prompts as a `custom` dataset reads them, one per line: vLLM's {"prompt": ...}, or
    SGLang's {"conversations": [user, assistant]} (the user turn is the prompt, sent as is; the
    assistant turn is a placeholder, since --sharegpt-output-len sets the output length)."""
    path = Path(path)
    with path.open("w") as f:
        for p in prompts:
            if style == "vllm":
                row: dict[str, Any] = {"prompt": p.text, "output_tokens": p.output_len}
            else:
                row = {"conversations": [{"content": p.text}, {"content": "placeholder"}]}
            f.write(json.dumps(row) + "\n")
    return path


def vllm_bench_argv(
    config: BenchConfig,
    python: str | Path,
    tokenizer: str,
    result_file: str | Path,
    prompts_file: str | Path | None = None,
) -> list[str]:
    """`vllm bench serve` on the same workload, writing its own result JSON: vLLM's random
    dataset with the same lengths (range ratio in vLLM's convention), or, with `prompts_file`
    (write_prompts_jsonl), exactly our prompts through its `custom` dataset. The API key goes in
    the environment (OPENAI_API_KEY), never on the command line."""
    if config.range_convention != "vllm":
        raise BenchError("vllm bench serve takes the range ratio in the vllm convention only")
    chat = config.endpoint == "chat"
    result_file = Path(result_file)
    if prompts_file is None:
        dataset = [
            "--dataset-name", "random",
            "--random-input-len", str(config.input_len),
            "--random-output-len", str(config.output_len),
            "--random-range-ratio", str(config.range_ratio),
        ]  # fmt: skip
    else:
        if config.range_ratio:
            raise BenchError("a prompts file carries one output length: use range_ratio 0")
        dataset = [
            "--dataset-name", "custom", "--dataset-path", str(prompts_file),
            "--custom-output-len", str(config.output_len),
            "--skip-chat-template", "--disable-shuffle",
        ]  # fmt: skip
    argv = [
        str(python), str(VLLM_BENCH_SHIM),
        "--backend", "openai-chat" if chat else "openai",
        "--base-url", config.server_root,
        "--endpoint", "/v1/chat/completions" if chat else "/v1/completions",
        "--model", config.model, "--tokenizer", tokenizer,
        *dataset,
        "--num-prompts", str(config.num_prompts),
        "--num-warmups", str(config.warmup),
        "--temperature", str(config.temperature),
        "--seed", str(config.seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,95,99",
        "--disable-tqdm", "--save-result",
        "--result-dir", str(result_file.parent), "--result-filename", result_file.name,
    ]  # fmt: skip
    if config.max_concurrency:
        argv += ["--max-concurrency", str(config.max_concurrency)]
    if not math.isinf(config.request_rate):
        argv += ["--request-rate", str(config.request_rate), "--burstiness", str(config.burstiness)]
    if config.ignore_eos:
        argv.append("--ignore-eos")
    return argv


def sglang_bench_argv(
    config: BenchConfig,
    python: str | Path,
    tokenizer: str,
    result_file: str | Path,
    prompts_file: str | Path | None = None,
    server: Literal["sglang", "vllm"] = "sglang",
    shim: bool = False,
) -> list[str]:
    """`python -m sglang.benchmark.serving` (SGLang's benchmark client; `sglang.bench_serving` is
    its deprecated alias in 0.5.23) on the same workload. SGLang's range ratio runs the other
    way (U[L*r, L]): fixed lengths are r = 1, so the ratio is translated, not copied. With
    `prompts_file` (write_prompts_jsonl(..., style="sglang")), exactly our prompts through its
    `custom` dataset (which shuffles them with --seed: the same prompts, in another order).
    `server` picks SGLang's OpenAI backends for that server (same request functions; the name
    only decides which cache-flush endpoint SGLang would call). `shim` runs the module through
    ci/bench/sglang_bench_serving.py (an environment without all of SGLang's dependencies)."""
    low, high = length_bounds(config.input_len, config.range_ratio, config.range_convention)
    if (low, high) != (config.input_len, config.input_len):
        raise BenchError("the SGLang reference run is set up for fixed lengths only")
    chat = config.endpoint == "chat"
    backend = {"sglang": "sglang-oai", "vllm": "vllm"}[server] + ("-chat" if chat else "")
    if prompts_file is None:
        dataset = [
            "--dataset-name", "random", "--random-range-ratio", "1",
            "--random-input-len", str(config.input_len),
            "--random-output-len", str(config.output_len),
        ]  # fmt: skip
    else:
        dataset = [
            "--dataset-name", "custom", "--dataset-path", str(prompts_file),
            "--sharegpt-output-len", str(config.output_len),
        ]  # fmt: skip
    program = [str(SGLANG_BENCH_SHIM)] if shim else ["-m", "sglang.benchmark.serving"]
    argv = [
        str(python), *program,
        "--backend", backend,
        "--base-url", config.server_root, "--model", config.model, "--tokenizer", tokenizer,
        *dataset,
        "--num-prompts", str(config.num_prompts),
        "--warmup-requests", str(config.warmup),
        "--seed", str(config.seed), "--output-file", str(result_file),
    ]  # fmt: skip
    if config.max_concurrency:
        argv += ["--max-concurrency", str(config.max_concurrency)]
    if not math.isinf(config.request_rate):
        argv += ["--request-rate", str(config.request_rate)]
    if shim:
        argv.append("--disable-tqdm")
    if not config.ignore_eos:
        argv.append("--disable-ignore-eos")
    return argv


def run_reference(
    argv: list[str], api_key: str | None, timeout_s: float, env: dict[str, str] | None = None
) -> None:
    """Run a reference harness; its failure raises with the tail of what it printed."""
    import os
    import subprocess

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if api_key:
        full_env["OPENAI_API_KEY"] = api_key
    try:
        proc = subprocess.run(
            argv, env=full_env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{Path(argv[1]).name} did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise BenchError(f"the reference benchmark failed (exit {proc.returncode}):\n{tail}")


# --------------------------------------------------------------------------- presets to runs


def config_for(preset_name: str, scale: Literal["gpu", "cpu"], **fields: Any) -> BenchConfig:
    """A BenchConfig for a preset at a scale; `fields` (base_url, model, api_key, ...) complete
    or override it."""
    return BenchConfig(**{**preset(preset_name, scale), "preset": preset_name, **fields})


def sweep_settings(scale: Literal["gpu", "cpu"] = "gpu") -> dict[str, Any]:
    entry = dict(_bench_data()["sweep"])
    cpu = entry.pop("cpu", {})
    return {**entry, **cpu} if scale == "cpu" else entry


def run_sweep(
    scale: Literal["gpu", "cpu"], tokenizer: Any | None = None, **fields: Any
) -> list[BenchRun]:
    """The concurrency sweep of data/benchmarks.yaml: one run per level, prompts_per_level x
    level requests each, the same lengths throughout."""
    settings = sweep_settings(scale)
    levels, per_level = settings.pop("levels"), settings.pop("prompts_per_level")
    runs = []
    for level in levels:
        config = BenchConfig(
            **{**settings, "num_prompts": per_level * level, "max_concurrency": level,
               "preset": f"sweep@{level}", **fields}
        )  # fmt: skip
        runs.append(run_benchmark(config, tokenizer=tokenizer, progress=False))
    return runs
