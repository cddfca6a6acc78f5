"""Fidelity: the cookbook's harness, `vllm bench serve` and `sglang.bench_serving` on one server,
each checked against the server's own clocks.

The three harnesses run interleaved (the order rotates each round) so that drift on a noisy
machine hits them alike, on the same prompts each round (ours, exact-length; vLLM and SGLang
read them through their `custom` datasets), against the CPU engine without prefix caching (no
tool finds another's prompts cached). Around each run the server's /metrics is scraped, the
first time once the tool's warm-up is over (cookbook.server_metrics; ci/bench/metrics_snapshot.py
for the two reference tools), so the histogram deltas cover exactly that run's measured
requests: the server-side mean TTFT, TPOT, ITL and E2E of the same requests the tool timed.

The server's clock starts after the request was read and its prompt rendered and tokenized, and
stops before the first chunk is sent back, so a client's TTFT should be the server's plus a
transport cost. Each round measures it with a plain client (httpx, one request at a time, the
round's prompts): client TTFT minus server TTFT over the same requests, and the same for a
trivial request (one-token prompt, one output token).

Goals, each computed and printed as ok / MISS with the margin:
- ttft_truth: each tool's mean TTFT within 3% (or 1 ms) of server TTFT + transport;
- ttft_closest: ours never further from that than either peer tool;
- sglang_vs_ours: SGLang's output tok/s and mean TPOT within 3% of ours;
- vllm_vs_ours: vLLM's output tok/s, mean TTFT and mean TPOT within 3% of ours.

    .venv/bin/python benchmarks/fidelity.py [--rounds 4] [--endpoints completions chat]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cookbook import bench, server_metrics
from cookbook.launch_plans import cpu_engine_python, fixture_path
from cookbook.paths import REPO_ROOT
from cookbook.server import Server

TOOLS = ("cookbook", "vllm", "sglang")
SGLANG_PYTHON = REPO_ROOT / ".venvs" / "sglang" / "bin" / "python"
COMPARED = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms")
SERVER_KEYS = {"ttft": "mean_ttft_ms", "tpot": "mean_tpot_ms", "itl": "mean_itl_ms",
               "e2el": "mean_e2el_ms"}  # fmt: skip
TOLERANCE, FLOOR_MS = 0.03, 1.0


def server_cpu_s(pid: int) -> float:
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rotation(round_index: int, tools=TOOLS) -> tuple[str, ...]:
    """The tools' order in a round: rotated by one each round, so each goes first, second and
    last equally often over len(tools) rounds."""
    k = round_index % len(tools)
    return tuple(tools[k:]) + tuple(tools[:k])


def within(value: float, target: float, tolerance=TOLERANCE, floor=FLOOR_MS) -> bool:
    """|value - target| within tolerance x target, or within `floor` (ms) for small targets."""
    return abs(value - target) <= max(tolerance * abs(target), floor)


# --------------------------------------------------------------------------- transport probe


def _first_and_last(client: httpx.Client, url: str, body: dict) -> tuple[float, float]:
    """Seconds to the first chunk that carries output text and to the last chunk with choices
    (tokens that decode to nothing still come as chunks), one streamed request."""
    first = last = None
    st = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            choices = json.loads(line[5:]).get("choices")
            if not choices:
                continue
            last = time.perf_counter() - st
            piece = choices[0].get("text") or (choices[0].get("delta") or {}).get("content")
            if piece and first is None:
                first = last
    if first is None:
        raise RuntimeError(f"{url}: a stream without output")
    return first, last


def transport_probe(server, config: bench.BenchConfig, texts: list[str], max_tokens: int) -> dict:
    """One request at a time: client TTFT / E2E (time to the first / last output chunk) against
    the server's histograms over the same requests; the differences are the transport cost."""
    chat = config.endpoint == "chat"
    url = f"{config.api_base}/{'chat/completions' if chat else 'completions'}"

    def body(text: str) -> dict:
        b = {"model": config.model, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
             "ignore_eos": True}  # fmt: skip
        b["messages" if chat else "prompt"] = [{"role": "user", "content": text}] if chat else text
        return b

    headers = {"Authorization": f"Bearer {config.api_key}"}
    with httpx.Client(headers=headers, timeout=120) as client:
        for text in texts[:2]:  # warm the connection, not measured
            _first_and_last(client, url, body(text))
        before = server_metrics.scrape(config.server_root, config.api_key)
        times = [_first_and_last(client, url, body(text)) for text in texts]
        after = server_metrics.scrape(config.server_root, config.api_key)
    srv = server_metrics.histogram_means(before, after)
    client_ttft = statistics.fmean(t[0] for t in times) * 1000
    client_e2el = statistics.fmean(t[1] for t in times) * 1000
    return {
        "requests": len(texts), "max_tokens": max_tokens, "server_count": srv["ttft"]["count"],
        "client_ttft_ms": client_ttft, "server_ttft_ms": srv["ttft"]["mean_ms"],
        "ttft_transport_ms": client_ttft - srv["ttft"]["mean_ms"],
        "client_e2el_ms": client_e2el, "server_e2el_ms": srv["e2el"]["mean_ms"],
        "e2el_transport_ms": client_e2el - srv["e2el"]["mean_ms"],
    }  # fmt: skip


# --------------------------------------------------------------------------- one round


def run_tool(tool, server, config, prompts, files, tokenizer, path: Path) -> dict:
    """One tool's run; its result with the server's means over the same measured requests."""
    snapshot = path.with_suffix(".metrics-before.txt")
    if tool == "cookbook":
        before: list[str] = []
        run = bench.run_benchmark(
            config, prompts=prompts, progress=False, log=lambda _: None,
            on_measure_start=lambda: before.append(
                server_metrics.scrape(server.base_url, server.api_key)
            ),
        )  # fmt: skip
        run.save(path)
        snapshot.write_text(before[0])
    else:
        env = {"COOKBOOK_METRICS_URL": f"{server.base_url}/metrics",
               "COOKBOOK_METRICS_SNAPSHOT": str(snapshot)}  # fmt: skip
        if tool == "vllm":
            argv = bench.vllm_bench_argv(
                config, cpu_engine_python(), tokenizer, path, files["vllm"]
            )
        else:
            argv = bench.sglang_bench_argv(
                config, SGLANG_PYTHON, tokenizer, path, files["sglang"], server="vllm", shim=True
            )
        bench.run_reference(argv, server.api_key, timeout_s=900, env=env)
        if not snapshot.exists():
            raise bench.BenchError(f"{tool}: no /metrics snapshot after its warm-up")
    after = server_metrics.scrape(server.base_url, server.api_key)
    result = bench.load_result(path)
    srv = server_metrics.histogram_means(snapshot.read_text(), after)
    result["server"] = {k: v["mean_ms"] for k, v in srv.items()}
    result["server_counts"] = {k: v["count"] for k, v in srv.items()}
    # Every measured request, and nothing else, in the deltas (warm-ups excluded).
    result["server_counts_ok"] = all(
        srv[k]["count"] == config.num_prompts for k in ("ttft", "tpot", "e2el")
    )
    return result


def run_endpoint(args, server, endpoint: str, tmp: Path) -> dict:
    config = bench.BenchConfig(
        base_url=server.base_url, model=server.model, api_key=server.api_key,
        endpoint=endpoint, input_len=args.input_len, output_len=args.output_len,
        num_prompts=args.num_prompts, max_concurrency=args.max_concurrency, warmup=2,
        request_rate=args.request_rate,
    )  # fmt: skip
    tokenizer = str(fixture_path(args.variant))
    runs: dict[str, list[dict]] = {t: [] for t in TOOLS}
    probes: dict[str, list[dict]] = {"workload_c1": [], "trivial": []}
    for n in range(args.rounds):
        # One fresh dataset per round (seed = round), the same prompts for every tool.
        tok = bench.ServerTokenizer(config)
        prompts = bench.build_dataset(dataclasses.replace(config, seed=n), tok)
        one_token = bench.single_token_words(tok, random.Random(n), want=1)[0]
        tok.close()
        measured = prompts[config.warmup :]
        files = {
            style: bench.write_prompts_jsonl(measured, tmp / f"{style}-{endpoint}-{n}.jsonl", style)
            for style in ("vllm", "sglang")
        }
        texts = [p.text for p in measured[: args.probe_requests]]
        probes["workload_c1"].append(transport_probe(server, config, texts, args.output_len))
        probes["trivial"].append(
            transport_probe(server, config, [one_token] * args.probe_requests, 1)
        )
        p = probes["workload_c1"][-1]
        print(f"{endpoint:<11} round {n + 1} transport (c=1, the round's prompts): TTFT client "
              f"{p['client_ttft_ms']:.2f} - server {p['server_ttft_ms']:.2f} = "
              f"{p['ttft_transport_ms']:.2f} ms; trivial request: "
              f"{probes['trivial'][-1]['ttft_transport_ms']:.2f} ms", flush=True)  # fmt: skip
        for tool in rotation(n):
            t = time.time()
            cpu_before = server_cpu_s(server.pid)
            path = tmp / f"{tool}-{endpoint}-{n}.json"
            result = run_tool(tool, server, config, prompts, files, tokenizer, path)
            result["server_cpu_s"] = round(server_cpu_s(server.pid) - cpu_before, 2)
            runs[tool].append(result)
            s = result["server"]
            print(
                f"{endpoint:<11} round {n + 1} {tool:<9}{result['output_throughput']:8.1f} tok/s  "
                f"TTFT {result['mean_ttft_ms']:7.2f} (server {s['ttft']:7.2f}) ms  "
                f"TPOT {result['mean_tpot_ms']:6.3f} (server {s['tpot']:6.3f}) ms  "
                f"failed {result['failed']}  counts ok {result['server_counts_ok']}  "
                f"({time.time() - t:.0f} s)",
                flush=True,
            )
    return summarize(runs, probes)


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def summarize(runs: dict[str, list[dict]], probes: dict[str, list[dict]]) -> dict:
    """Round means per tool (client and server side), the transport cost (median) and the goals."""
    means = {t: {k: _mean(rows, k) for k in COMPARED} for t, rows in runs.items()}
    server = {
        t: {k: statistics.fmean(r["server"][k] for r in rows) for k in SERVER_KEYS}
        for t, rows in runs.items()
    }
    # The median over rounds: one round on a loaded machine can cost ten times the others.
    transport = {
        name: {
            k: statistics.median(r[k] for r in rows)
            for k in ("ttft_transport_ms", "e2el_transport_ms")
        }
        for name, rows in probes.items()
    }
    cost = transport["workload_c1"]["ttft_transport_ms"]
    vs_server = {}
    for t in runs:
        row = {}
        for k, field in SERVER_KEYS.items():
            client, srv = means[t][field], server[t][k]
            row[k] = {"client_ms": client, "server_ms": srv, "client_minus_server_ms": client - srv,
                      "ratio": client / srv}  # fmt: skip
        target = server[t]["ttft"] + cost
        row["ttft"]["target_ms"] = target  # server TTFT + transport
        row["ttft"]["excess_ms"] = means[t]["mean_ttft_ms"] - target
        vs_server[t] = row
    goals = {}
    for t in runs:
        target = vs_server[t]["ttft"]["target_ms"]
        goals[f"ttft_truth:{t}"] = {
            "ok": within(means[t]["mean_ttft_ms"], target),
            "value": means[t]["mean_ttft_ms"], "target": target,
            "off_ms": vs_server[t]["ttft"]["excess_ms"],
            "off_pct": 100 * vs_server[t]["ttft"]["excess_ms"] / target,
            "allowed_ms": max(TOLERANCE * target, FLOOR_MS),
        }  # fmt: skip
    ours = abs(vs_server["cookbook"]["ttft"]["excess_ms"])
    peers = {t: abs(vs_server[t]["ttft"]["excess_ms"]) for t in runs if t != "cookbook"}
    goals["ttft_closest"] = {"ok": all(ours <= v for v in peers.values()), "ours_off_ms": ours,
                             "peers_off_ms": peers}  # fmt: skip
    for peer, keys in (("sglang", COMPARED[:1] + COMPARED[2:3]), ("vllm", COMPARED[:3])):
        for k in keys:
            ratio = means[peer][k] / means["cookbook"][k]
            goals[f"{peer}_vs_ours:{k}"] = {
                "ok": abs(ratio - 1) <= TOLERANCE, "ratio_peer_over_ours": ratio,
                "off_pct": 100 * (ratio - 1),
                "per_round": [p[k] / c[k] for p, c in zip(runs[peer], runs["cookbook"],
                                                          strict=True)],
            }  # fmt: skip
    return {"runs": runs, "probes": probes, "means": means, "server_means": server,
            "transport": transport, "vs_server": vs_server, "goals": goals}  # fmt: skip


# --------------------------------------------------------------------------- report


def print_report(results: dict) -> bool:
    ok_all = True
    for endpoint, res in results.items():
        tr = res["transport"]
        print(f"\n== {endpoint}: transport cost (client - server, one at a time): TTFT "
              f"{tr['workload_c1']['ttft_transport_ms']:.2f} ms with the study's prompts, "
              f"{tr['trivial']['ttft_transport_ms']:.2f} ms for a trivial request; E2E "
              f"{tr['workload_c1']['e2el_transport_ms']:.2f} ms")  # fmt: skip
        print(f"{'metric':<6}{'tool':<10}{'client ms':>11}{'server ms':>11}{'diff ms':>9}"
              f"{'ratio':>8}")  # fmt: skip
        for k in SERVER_KEYS:
            for t, row in res["vs_server"].items():
                r = row[k]
                print(f"{k:<6}{t:<10}{r['client_ms']:>11.3f}{r['server_ms']:>11.3f}"
                      f"{r['client_minus_server_ms']:>9.3f}{r['ratio']:>8.3f}")  # fmt: skip
        print(f"{'output tok/s':<16}" + "".join(
            f"{t} {res['means'][t]['output_throughput']:.1f}  " for t in TOOLS))  # fmt: skip
        print("goals:")
        for name, g in res["goals"].items():
            ok_all &= g["ok"]
            mark = "ok  " if g["ok"] else "MISS"
            if name.startswith("ttft_truth"):
                detail = (f"{g['value']:.2f} vs server+transport {g['target']:.2f} ms: off "
                          f"{g['off_ms']:+.2f} ms ({g['off_pct']:+.1f}%), allowed "
                          f"+-{g['allowed_ms']:.2f} ms")  # fmt: skip
            elif name == "ttft_closest":
                detail = f"ours off {g['ours_off_ms']:.2f} ms, peers " + ", ".join(
                    f"{t} {v:.2f} ms" for t, v in g["peers_off_ms"].items()
                )
            else:
                lo, hi = min(g["per_round"]), max(g["per_round"])
                detail = (f"peer/ours {g['ratio_peer_over_ours']:.3f} ({g['off_pct']:+.1f}%), "
                          f"rounds {lo:.3f}-{hi:.3f}, allowed +-3%")  # fmt: skip
            print(f"  {mark} {name:<38} {detail}")
    return ok_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", default="instruct")
    ap.add_argument(
        "--endpoints", nargs="+", default=["completions", "chat"], choices=["completions", "chat"]
    )
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=96)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--request-rate", type=float, default=float("inf"))
    ap.add_argument("--probe-requests", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fidelity.json"))
    args = ap.parse_args()

    started = time.time()
    results = {}
    with (
        # No prefix cache: every tool sends exactly the same prompts in a round and finds the
        # server in the same state (nothing cached by another tool's run).
        Server(
            args.variant, engine="vllm-cpu", progress=False,
            extra_args=("--no-enable-prefix-caching",),
        ) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):  # fmt: skip
        for endpoint in args.endpoints:
            results[endpoint] = run_endpoint(args, server, endpoint, Path(tmp))
    ok_all = print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "cookbook harness, vllm bench serve and sglang.bench_serving, interleaved, "
                "against the CPU engine, each beside the server's own /metrics histograms",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
                   f"python {sys.version.split()[0]}",
        "workload": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "server": f"CPU engine (vLLM 0.32 CPU), prefix caching off, serving "
                  f"{fixture_path(args.variant).name} (a tiny fixture, not LFM2.5)",
        "tools": {"cookbook": "cookbook.bench", "vllm": "vllm bench serve (vLLM 0.32, "
                  "ci/bench/vllm_bench_serve.py)", "sglang": "sglang.bench_serving (SGLang "
                  "0.5.23, --backend vllm[-chat], ci/bench/sglang_bench_serving.py)"},
        "goals_met": ok_all,
        "wall_s": round(time.time() - started),
        "endpoints": results,
    }, indent=2, default=str) + "\n")  # fmt: skip
    print(
        f"\n{'all goals met' if ok_all else 'some goals MISSED'}; wrote {args.out} "
        f"({time.time() - started:.0f} s)"
    )
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
