"""A small OpenAI-compatible streaming server for benchmark tests (aiohttp, in a thread).

The request's `model` picks the behaviour, so one server covers every case:
  ok       stream `max_tokens` chunks, then a usage chunk and [DONE]
  nousage  the same without the usage chunk
  error    HTTP 500 with a JSON error body
  die      two chunks, then the connection is dropped
  stall    one chunk, then nothing
  cut      one token fewer than `max_tokens` (as a server at its context limit)
  fail     two chunks, then an error message in the stream (HTTP 200 all along)
  negative `max_tokens` chunks, then a usage chunk counting -5 completion tokens
  notjson  a stream chunk that is not JSON
/v1/models lists these modes with max_model_len MAX_MODEL_LEN.
A whitespace tokenizer backs /tokenize and /detokenize: token i is the word WORDS[i]
(an unknown word gets some id; the harness only probes with those).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading

from aiohttp import web

WORDS = ["".join(letters) for letters in itertools.product("abcdefgh", repeat=3)][:500]
INDEX = {w: i for i, w in enumerate(WORDS)}
REQUESTS = web.AppKey("requests", list)
MODES = ("ok", "nousage", "error", "die", "stall", "cut", "fail", "negative", "notjson")
MAX_MODEL_LEN = 4096


def chunk(text: str, usage: dict | None = None, choices: bool = True) -> bytes:
    body = {
        "id": "cmpl-test",
        "object": "text_completion",
        "model": "m",
        "choices": [{"index": 0, "text": text, "finish_reason": None}] if choices else [],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[REQUESTS].append(body)
    mode, n = body["model"], int(body.get("max_tokens", 4))
    if mode == "error":
        return web.json_response({"error": {"message": "boom"}}, status=500)
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    if mode == "die":
        await resp.write(chunk(" a") + chunk(" b"))
        request.transport.close()
        return resp
    if mode == "fail":
        error = {"error": {"message": "engine core died", "type": "InternalServerError"}}
        await resp.write(chunk(" a") + chunk(" b") + b"data: " + json.dumps(error).encode())
        await resp.write(b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp
    if mode == "stall":
        await resp.write(chunk(" a"))
        await asyncio.sleep(60)
    if mode == "cut":
        n -= 1
    if mode == "notjson":
        await resp.write(b"data: {not json\n\n")
    for i in range(n):
        await resp.write(chunk(f" t{i}"))
        await asyncio.sleep(0.001)
    if mode != "nousage":
        done = -5 if mode == "negative" else n
        usage = {"prompt_tokens": 7, "completion_tokens": done, "total_tokens": 7 + done}
        await resp.write(chunk("", usage=usage, choices=False))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def tokenize(request: web.Request) -> web.Response:
    body = await request.json()
    tokens = [INDEX.get(w, len(w) % len(WORDS)) for w in body["prompt"].split()]
    return web.json_response(
        {"tokens": tokens, "count": len(tokens), "max_model_len": MAX_MODEL_LEN}
    )


async def models(request: web.Request) -> web.Response:
    cards = [{"id": m, "object": "model", "max_model_len": MAX_MODEL_LEN} for m in MODES]
    return web.json_response({"object": "list", "data": cards})


async def detokenize(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"prompt": "".join(" " + WORDS[i] for i in body["tokens"])})


class FakeServer:
    def __init__(self) -> None:
        self.app = web.Application()
        self.app[REQUESTS] = []
        self.app.router.add_post("/v1/completions", completions)
        self.app.router.add_post("/v1/chat/completions", completions)
        self.app.router.add_post("/tokenize", tokenize)
        self.app.router.add_post("/detokenize", detokenize)
        self.app.router.add_get("/v1/models", models)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        self.loop.run_forever()

    def __enter__(self) -> FakeServer:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake server did not start")
        return self

    def __exit__(self, *exc) -> None:
        async def shutdown() -> None:
            await self.runner.cleanup()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:  # handlers still stalling
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        return self.app[REQUESTS]
