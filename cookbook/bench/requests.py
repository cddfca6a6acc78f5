"""One streaming request and what it records. Kept apart from the run so its timing can be checked
on its own against vLLM's request function (benchmarks/request_function_parity.py) and its
speed measured (benchmarks/client_capacity.py): the client must not be what limits a run."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cookbook.bench.config import BenchConfig
from cookbook.bench.dataset import Prompt


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
            if got is not None and got < 0:
                record.error = f"the server counted {got} completion tokens (usage is broken)"
                return
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
        except TimeoutError:
            record.error = (
                f"TimeoutError: no complete answer within the request timeout of "
                f"{config.request_timeout_s:g} s (--request-timeout)"
            )
        except json.JSONDecodeError as exc:
            record.error = (
                f"JSONDecodeError: a stream chunk was not JSON ({exc.msg} at character "
                f"{exc.pos}): is this an OpenAI-compatible streaming server?"
            )
        except aiohttp.ClientError as exc:
            record.error = f"{type(exc).__name__}: {exc or 'the connection broke'}"[:500]
