"""The reference harnesses (`vllm bench serve`, `sglang.benchmark.serving`) on the same workload as
ours, so the cookbook's numbers can be checked against the tools the published figures came from.
They run as subprocesses, in whatever environment has them installed."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cookbook.bench.config import BenchConfig, BenchError, length_bounds
from cookbook.bench.dataset import Prompt
from cookbook.paths import REPO_ROOT

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
