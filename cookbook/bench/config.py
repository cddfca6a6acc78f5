"""A benchmark's settings, checked when made, and the workloads of data/benchmarks.yaml: one place
says what a valid run is, so every entry point (CLI, notebooks, scripts) refuses the same."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from cookbook.errors import BadInputError
from cookbook.paths import DATA_DIR

BENCH_DATA = DATA_DIR / "benchmarks.yaml"
Endpoint = Literal["completions", "chat"]
RangeConvention = Literal["vllm", "sglang"]


class BenchError(BadInputError, ValueError):
    """A bad benchmark setting, named with what is valid."""


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
        elif "@" in urlsplit(self.base_url).netloc:  # never echoed: the part before @ is a secret
            where = urlsplit(self.base_url)
            host = where.netloc.rsplit("@", 1)[1]
            problems.append(
                f"base_url {where.scheme}://...@{host} carries credentials "
                "(pass the key with --api-key or OPENAI_API_KEY instead)"
            )
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


# Presets: the workloads of data/benchmarks.yaml, each with a scaled-down `cpu` version.


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


def config_for(preset_name: str, scale: Literal["gpu", "cpu"], **fields: Any) -> BenchConfig:
    """A BenchConfig for a preset at a scale; `fields` (base_url, model, api_key, ...) complete
    or override it."""
    return BenchConfig(**{**preset(preset_name, scale), "preset": preset_name, **fields})


def sweep_settings(scale: Literal["gpu", "cpu"] = "gpu") -> dict[str, Any]:
    entry = dict(_bench_data()["sweep"])
    cpu = entry.pop("cpu", {})
    return {**entry, **cpu} if scale == "cpu" else entry
