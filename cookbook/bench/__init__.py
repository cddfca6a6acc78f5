"""Serving benchmark: token-exact random prompts, an async streaming client, vLLM-style metrics.

One module per concern (config, checks, dataset, requests, metrics, run, report, published,
reference, plots); `from cookbook import bench` gives every name below, as the single module
it once was did. The plots live in `cookbook.bench.plots`, imported on their own (matplotlib).
"""

from cookbook.bench.checks import check_lengths, check_out_path, check_server
from cookbook.bench.config import (
    BENCH_DATA,
    BenchConfig,
    BenchError,
    Endpoint,
    RangeConvention,
    config_for,
    length_bounds,
    preset,
    preset_names,
    preset_source,
    sample_lengths,
    sweep_settings,
)
from cookbook.bench.dataset import (
    Prompt,
    ServerTokenizer,
    build_dataset,
    single_token_words,
    token_exact_prompt,
)
from cookbook.bench.metrics import (
    CONVENTIONS,
    METRICS,
    PERCENTILES,
    Distribution,
    Metrics,
    compute_metrics,
    percentile,
)
from cookbook.bench.published import (
    CARD_FIELDS,
    PUBLISHED_DATA,
    card_comparison,
    card_statistic,
    published,
    published_card,
    published_seed_004,
)
from cookbook.bench.reference import (
    SGLANG_BENCH_SHIM,
    VLLM_BENCH_SHIM,
    run_reference,
    sglang_bench_argv,
    vllm_bench_argv,
    write_prompts_jsonl,
)
from cookbook.bench.report import SUMMARY_FIELDS, load_result, results_dir, summary_table
from cookbook.bench.requests import RequestRecord, _one_request, request_body
from cookbook.bench.run import BenchRun, run_benchmark, run_sweep

__all__ = [
    # config
    "BENCH_DATA",
    "BenchConfig",
    "BenchError",
    "Endpoint",
    "RangeConvention",
    "config_for",
    "length_bounds",
    "preset",
    "preset_names",
    "preset_source",
    "sample_lengths",
    "sweep_settings",
    # checks
    "check_lengths",
    "check_out_path",
    "check_server",
    # dataset
    "Prompt",
    "ServerTokenizer",
    "build_dataset",
    "single_token_words",
    "token_exact_prompt",
    # requests (benchmarks/ time `_one_request` on its own)
    "RequestRecord",
    "_one_request",
    "request_body",
    # metrics
    "CONVENTIONS",
    "METRICS",
    "PERCENTILES",
    "Distribution",
    "Metrics",
    "compute_metrics",
    "percentile",
    # run
    "BenchRun",
    "run_benchmark",
    "run_sweep",
    # report
    "SUMMARY_FIELDS",
    "load_result",
    "results_dir",
    "summary_table",
    # published
    "CARD_FIELDS",
    "card_statistic",
    "PUBLISHED_DATA",
    "card_comparison",
    "published",
    "published_card",
    "published_seed_004",
    # reference
    "SGLANG_BENCH_SHIM",
    "VLLM_BENCH_SHIM",
    "run_reference",
    "sglang_bench_argv",
    "vllm_bench_argv",
    "write_prompts_jsonl",
]
