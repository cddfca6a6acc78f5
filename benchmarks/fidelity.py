"""Fidelity: the cookbook's harness against `vllm bench serve`, same server, same workload.

The two harnesses run interleaved (ours, vLLM's, ours, ...; the order alternates each round) so
that drift on a noisy machine hits both alike. Printed and saved: per-round figures and the ratio
ours / vLLM's of the round means for output tok/s, mean TTFT and mean TPOT (goal: 1 +- 0.03).

    .venv/bin/python benchmarks/fidelity.py [--rounds 6] [--endpoints completions chat]

Both tools send the same prompts each round (ours, exact-length, written to JSONL for vLLM's
`custom` dataset) to a server without prefix caching, so that neither finds the other's prompts
cached (vLLM's warm-up re-sends its first measured prompt). With prefix caching on and a separate
dataset per tool, the mean-TTFT ratio measured here ranged from 0.91 to 1.32 between set-ups.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from helpers import bench
from helpers.server import Server, cpu_engine_python, fixture_path


def server_cpu_s(pid: int) -> float:
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


COMPARED = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms")


def run_endpoint(args, server, endpoint: str, tmp: Path) -> dict:
    """Interleaved rounds of both tools on one endpoint; per-round results, means and ratios."""
    config = bench.BenchConfig(
        base_url=server.base_url, model=server.model, api_key=server.api_key,
        endpoint=endpoint, input_len=args.input_len, output_len=args.output_len,
        num_prompts=args.num_prompts, max_concurrency=args.max_concurrency, warmup=2,
        request_rate=args.request_rate,
    )  # fmt: skip
    tokenizer = str(fixture_path(args.variant))
    runs: dict[str, list[dict]] = {"cookbook": [], "vllm": []}
    for n in range(args.rounds):
        # One fresh dataset per round (seed = round), the same prompts for both tools: only the
        # harnesses differ (vLLM reads ours through its `custom` dataset).
        tok = bench.ServerTokenizer(config)
        prompts = bench.build_dataset(dataclasses.replace(config, seed=n), tok)
        tok.close()
        prompts_file = bench.write_prompts_jsonl(
            prompts[config.warmup :], tmp / f"prompts-{endpoint}-{n}.jsonl"
        )
        order = ("cookbook", "vllm") if n % 2 == 0 else ("vllm", "cookbook")
        for tool in order:
            t = time.time()
            cpu_before = server_cpu_s(server.pid)
            path = tmp / f"{tool}-{endpoint}-{n}.json"
            if tool == "cookbook":
                run = bench.run_benchmark(
                    config, prompts=prompts, progress=False, log=lambda _: None
                )
                run.save(path)
            else:
                argv = bench.vllm_bench_argv(
                    config, cpu_engine_python(), tokenizer, path, prompts_file
                )
                bench.run_reference(argv, server.api_key, timeout_s=900)
            result = bench.load_result(path)
            # The server's CPU seconds over the whole step, each tool's warm-up included.
            result["server_cpu_s"] = round(server_cpu_s(server.pid) - cpu_before, 2)
            runs[tool].append(result)
            print(
                f"{endpoint:<11} round {n + 1} {tool:<9} "
                f"{result['output_throughput']:8.1f} tok/s  "
                f"TTFT {result['mean_ttft_ms']:7.2f} ms  TPOT {result['mean_tpot_ms']:6.3f} ms  "
                f"failed {result['failed']}  ({time.time() - t:.0f} s)",
                flush=True,
            )
    means = {
        tool: {k: statistics.fmean(r[k] for r in rows) for k in COMPARED}
        for tool, rows in runs.items()
    }
    ratios = {k: means["cookbook"][k] / means["vllm"][k] for k in COMPARED}
    # Paired per-round ratios: how far one round alone can stray on this machine.
    per_round = {
        k: [c[k] / v[k] for c, v in zip(runs["cookbook"], runs["vllm"], strict=True)]
        for k in COMPARED
    }
    return {
        "runs": runs, "means": means, "ratios": ratios,
        "per_round_ratio_range": {k: [min(v), max(v)] for k, v in per_round.items()},
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--variant", default="instruct")
    ap.add_argument(
        "--endpoints", nargs="+", default=["completions", "chat"], choices=["completions", "chat"]
    )
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=96)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--request-rate", type=float, default=float("inf"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fidelity.json"))
    args = ap.parse_args()

    results = {}
    with (
        # No prefix cache: both tools can then send exactly the same prompts in a round and
        # find the server in the same state (nothing cached by the other tool's run).
        Server(
            args.variant, engine="cpu", progress=False,
            extra_args=("--no-enable-prefix-caching",),
        ) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):  # fmt: skip
        for endpoint in args.endpoints:
            results[endpoint] = run_endpoint(args, server, endpoint, Path(tmp))

    print(f"\n{'endpoint':<12}{'metric':<22}{'cookbook':>10}{'vllm':>10}{'ratio':>8}"
          f"  {'round range':<13}  goal 1 +- 0.03")  # fmt: skip
    ok_all = True
    for endpoint, res in results.items():
        for k in COMPARED:
            ratio, (lo, hi) = res["ratios"][k], res["per_round_ratio_range"][k]
            goal = "(info)"
            if k in COMPARED[:3]:
                ok = abs(ratio - 1) <= 0.03
                ok_all &= ok
                goal = "ok" if ok else "OUTSIDE"
            print(
                f"{endpoint:<12}{k:<22}{res['means']['cookbook'][k]:>10.2f}"
                f"{res['means']['vllm'][k]:>10.2f}{ratio:>8.3f}  {lo:.3f}-{hi:.3f}    {goal}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "cookbook harness vs vllm bench serve, interleaved, against the CPU engine",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
                   f"python {sys.version.split()[0]}",
        "workload": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "server": f"CPU engine (vLLM 0.32 CPU), prefix caching off, serving "
                  f"{fixture_path(args.variant)} (a tiny fixture, not LFM2.5)",
        "endpoints": results,
    }, indent=2, default=str) + "\n")  # fmt: skip
    print(f"\nwrote {args.out}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
