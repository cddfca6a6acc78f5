"""Fidelity: the cookbook's harness against `vllm bench serve`, same server, same workload.

The two harnesses run interleaved (ours, vLLM's, ours, ...; the order alternates each round) so
that drift on a noisy machine hits both alike. Printed and saved: per-round figures and the ratio
ours / vLLM's of the round means for output tok/s, mean TTFT and mean TPOT (goal: 1 +- 0.03).

    .venv/bin/python benchmarks/fidelity.py [--rounds 3] [--out benchmarks/results/fidelity.json]
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


def pin_threads(pid: int, cores: set[int]) -> None:
    """Every thread of a process (and of its children) onto `cores`."""
    import psutil

    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for thread in proc.threads():
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread.id, cores)


COMPARED = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", default="instruct")
    ap.add_argument("--endpoint", default="completions", choices=["completions", "chat"])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=24)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fidelity.json"))
    ap.add_argument(
        "--no-pin", action="store_true",
        help="do not give the server its own core (the clients then compete with it for CPU)",
    )  # fmt: skip
    args = ap.parse_args()

    runs: dict[str, list[dict]] = {"cookbook": [], "vllm": []}
    with (
        Server(args.variant, engine="cpu", progress=False) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = bench.BenchConfig(
            base_url=server.base_url, model=server.model, api_key=server.api_key,
            endpoint=args.endpoint, input_len=args.input_len, output_len=args.output_len,
            num_prompts=args.num_prompts, max_concurrency=args.max_concurrency, warmup=2,
        )  # fmt: skip
        tokenizer = str(fixture_path(args.variant))
        cores = sorted(os.sched_getaffinity(0))
        pinned = not args.no_pin and len(cores) >= 2
        if pinned:
            # The server on the last core, both clients (this process, and vLLM's as our child)
            # on the first: a client's own CPU use cannot slow the server it measures.
            pin_threads(server.pid, {cores[-1]})
            os.sched_setaffinity(0, {cores[0]})
        for n in range(args.rounds):
            # Each tool gets its own fresh prompts from the same generator (seeds 2n and 2n+1):
            # only the harnesses differ (vLLM reads ours through its `custom` dataset; its random
            # dataset's prompts load this server differently), and neither tool's run finds the
            # other's prompts in the server's prefix cache.
            datasets = {}
            for i, tool in enumerate(("cookbook", "vllm")):
                tok = bench.ServerTokenizer(config)
                datasets[tool] = bench.build_dataset(
                    dataclasses.replace(config, seed=2 * n + i), tok
                )
                tok.close()
            prompts = datasets["cookbook"]
            prompts_file = bench.write_prompts_jsonl(
                datasets["vllm"][config.warmup :], Path(tmp) / f"prompts-{n}.jsonl"
            )
            order = ("cookbook", "vllm") if n % 2 == 0 else ("vllm", "cookbook")
            for tool in order:
                t = time.time()
                if tool == "cookbook":
                    run = bench.run_benchmark(
                        config, prompts=prompts, progress=False, log=lambda _: None
                    )
                    path = Path(tmp) / f"cookbook-{n}.json"
                    run.save(path)
                else:
                    path = Path(tmp) / f"vllm-{n}.json"
                    argv = bench.vllm_bench_argv(
                        config, cpu_engine_python(), tokenizer, path, prompts_file
                    )
                    bench.run_reference(argv, server.api_key, timeout_s=900)
                result = bench.load_result(path)
                runs[tool].append(result)
                print(
                    f"round {n + 1} {tool:<9} {result['output_throughput']:8.1f} tok/s  "
                    f"TTFT {result['mean_ttft_ms']:8.1f} ms  "
                    f"TPOT {result['mean_tpot_ms']:7.2f} ms  "
                    f"failed {result['failed']}  ({time.time() - t:.0f} s)",
                    flush=True,
                )

    means = {
        tool: {k: statistics.fmean(r[k] for r in rows) for k in COMPARED}
        for tool, rows in runs.items()
    }
    ratios = {k: means["cookbook"][k] / means["vllm"][k] for k in COMPARED}
    print()
    print(f"{'metric':<22}{'cookbook':>12}{'vllm':>12}{'ratio':>9}  goal 1 +- 0.03")
    for k in COMPARED:
        ok = "ok" if abs(ratios[k] - 1) <= 0.03 else "OUTSIDE"
        goal = ok if k in COMPARED[:3] else "(info)"
        print(
            f"{k:<22}{means['cookbook'][k]:>12.2f}{means['vllm'][k]:>12.2f}"
            f"{ratios[k]:>9.3f}  {goal}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "cookbook harness vs vllm bench serve, interleaved, against the CPU engine",
        "machine": f"{platform.machine()}, {platform.system()}, python {sys.version.split()[0]}",
        "workload": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "pinned": "server on its own core, clients on another" if pinned else "not pinned",
        "server": f"CPU engine (vLLM 0.32 CPU) serving {tokenizer} (a tiny fixture, not LFM2.5)",
        "runs": runs, "means": means, "ratios": ratios,
    }, indent=2, default=str) + "\n")  # fmt: skip
    print(f"\nwrote {args.out}")
    return 0 if all(abs(ratios[k] - 1) <= 0.03 for k in COMPARED[:3]) else 1


if __name__ == "__main__":
    sys.exit(main())
