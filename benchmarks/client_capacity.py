"""Client capacity: how many streamed chunks per second a benchmark client ingests on one core.

A synthetic OpenAI-compatible server on loopback (its own process, pinned to another core)
answers every POST /v1/completions with a stream of vLLM-shaped chunks as fast as the socket
takes them. Each client runs in its own process pinned to one core and sends requests at a fixed
concurrency; chunks/s = chunks received / wall time. Clients alternate per level (noisy machine).
Goal: the cookbook's client >= 1.5x vLLM's (`vllm bench serve`'s request function), so that the
harness is never what limits a fast GPU's measurement.

    .venv/bin/python benchmarks/client_capacity.py [--levels 1 16 64 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHUNK = (
    'data: {"id":"cmpl-0123456789abcdef","object":"text_completion","created":1763800000,'
    '"model":"synthetic","choices":[{"index":0,"text":" word","logprobs":null,'
    '"finish_reason":null,"stop_reason":null}],"usage":null}\n\n'
)
TAIL = (
    'data: {"id":"cmpl-0123456789abcdef","object":"text_completion","created":1763800000,'
    '"model":"synthetic","choices":[],"usage":{"prompt_tokens":8,"total_tokens":{total},'
    '"completion_tokens":{n}}}\n\ndata: [DONE]\n\n'
)


# ----------------------------------------------------------------------------- the server


def serve(port: int, chunks: int) -> None:
    body = CHUNK * chunks + TAIL.replace("{total}", str(chunks + 8)).replace("{n}", str(chunks))
    response = (
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        f"content-length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one response per request on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ----------------------------------------------------------------------------- the clients


def client(kind: str, port: int, concurrency: int, requests: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/completions"
    if kind == "vllm":
        import aiohttp
        from vllm.benchmarks.lib.endpoint_request_func import (
            RequestFuncInput,
            async_request_openai_completions,
        )

        async def run() -> int:
            sem = asyncio.Semaphore(concurrency)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def one() -> int:
                    async with sem:
                        inp = RequestFuncInput(prompt="hi", api_url=url, prompt_len=1,
                                               output_len=10, model="synthetic")  # fmt: skip
                        out = await async_request_openai_completions(inp, session)
                        assert out.success, out.error
                        return len(out.itl) + 1

                return sum(await asyncio.gather(*(one() for _ in range(requests))))

    else:
        import aiohttp

        from cookbook import bench

        config = bench.BenchConfig(base_url=url.rsplit("/", 1)[0], model="synthetic",
                                   output_len=10, num_prompts=requests)  # fmt: skip
        prompt = bench.Prompt("hi", 1, 10)

        async def run() -> int:
            sem = asyncio.Semaphore(concurrency)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=600)
            records = [bench.RequestRecord(i, 1, 10) for i in range(requests)]
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, read_bufsize=2**20
            ) as session:
                await asyncio.gather(*(
                    bench._one_request(session, url, {}, config, prompt, r, sem) for r in records
                ))  # fmt: skip
            assert all(r.success for r in records), records[0].error
            return sum(r.token_chunks for r in records)

    t = time.perf_counter()
    chunks = asyncio.run(run())
    print(json.dumps({"chunks": chunks, "seconds": time.perf_counter() - t}))


# ----------------------------------------------------------------------------- orchestration


def pinned(core: int) -> dict:
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {core})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--chunks", type=int, default=2000, help="chunks per response")
    ap.add_argument("--total-chunks", type=int, default=400_000, help="per measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/client_capacity.json")
    ap.add_argument("--vllm-python", default=str(REPO / ".venvs/cpu-engine/bin/python"))
    ap.add_argument("_role", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._role:  # internal: this file re-run as the server or a client process
        role, *rest = args._role
        if role == "serve":
            serve(int(rest[0]), int(rest[1]))
        else:
            client(role, int(rest[0]), int(rest[1]), int(rest[2]))
        return 0

    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[-1], cores[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(port), str(args.chunks)], **pinned(server_core)
    )
    pythons = {"cookbook": sys.executable, "vllm": args.vllm_python}
    results: dict[str, dict[int, list[float]]] = {k: {} for k in pythons}
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for level in args.levels:
            requests = max(level, args.total_chunks // args.chunks)
            requests = -(-requests // level) * level  # whole waves
            for rep in range(args.repeats):
                order = list(pythons) if rep % 2 == 0 else list(pythons)[::-1]
                for kind in order:
                    proc = subprocess.run(
                        [pythons[kind], __file__, kind, str(port), str(level), str(requests)],
                        capture_output=True, text=True, timeout=600, cwd=REPO,
                        env={**os.environ, "PYTHONPATH": str(REPO)}, **pinned(client_core),
                    )  # fmt: skip
                    if proc.returncode != 0:
                        raise SystemExit(f"{kind} client failed:\n{proc.stderr[-2000:]}")
                    got = json.loads(proc.stdout.strip().splitlines()[-1])
                    rate = got["chunks"] / got["seconds"]
                    results[kind].setdefault(level, []).append(rate)
                    print(f"c={level:<4} {kind:<9} {rate:>10,.0f} chunks/s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\n{'concurrency':<12}{'cookbook':>14}{'vllm':>14}{'ratio':>8}  goal >= 1.5")
    summary = {}
    for level in args.levels:
        ours = statistics.fmean(results["cookbook"][level])
        theirs = statistics.fmean(results["vllm"][level])
        summary[level] = {"cookbook": ours, "vllm": theirs, "ratio": ours / theirs}
        ok = "ok" if ours / theirs >= 1.5 else "BELOW"
        print(f"{level:<12}{ours:>14,.0f}{theirs:>14,.0f}{ours / theirs:>8.2f}  {ok}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "streamed chunks/s ingested by one client process pinned to one core",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}",
        "chunks_per_response": args.chunks, "repeats": args.repeats,
        "runs": results, "summary": summary,
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {args.out}")
    return 0 if all(v["ratio"] >= 1.5 for v in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
