"""SGLang's own parsers on the fixtures' real outputs, beside what vLLM's parsers made of them.

The CPU engine serves each fixture twice: with the cells' parsers (what a notebook sees from
vLLM), and with none, keeping special tokens (the raw text, and its streamed pieces, that SGLang
would parse). The raw text then goes through the pinned SGLang's `lfm2` detector and its
`qwen3-thinking` reasoning parser (pure Python, in .venvs/sglang-check), streaming and not.
Where the two engines agree, the test asserts it; where they differ by design, it asserts the
difference the notebooks describe:
- SGLang's non-streaming `content` keeps only the text before the call block;
- SGLang streams each call whole, in one chunk (vLLM: the name, then argument fragments);
- SGLang's `qwen3-thinking` takes everything as reasoning when `</think>` never comes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers.client import ToolCallAccumulator, reasoning_of
from helpers.server import Server, fixture_path
from helpers.tools import WEATHER_TOOL

TOOL_PROMPTS = [
    "What's the weather like in Paris today?",
    "Is it raining in London?",
    "What's the weather in Oslo and in Cairo?",
    "How warm is it in Tokyo right now?",
]
THINKING_PROMPTS = ["What is 17 * 3?", "What is the capital of Japan?", "What is 5 + 8?"]
RAW = {"skip_special_tokens": False}

SGLANG_PARSE = r"""
import json, sys
from sglang.srt.entrypoints.openai.protocol import Function, Tool
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.parser.reasoning_parser import ReasoningParser

job = json.load(sys.stdin)
tools = [Tool(type="function", function=Function(**t["function"])) for t in job["tools"]]
out = {"tools": [], "reasoning": []}
for item in job["tool_texts"]:
    parser = FunctionCallParser(tools=tools, tool_call_parser="lfm2")
    text, calls = parser.parse_non_stream(item["text"])
    streamer = FunctionCallParser(tools=tools, tool_call_parser="lfm2")
    chunks = [streamer.parse_stream_chunk(piece) for piece in item["pieces"]]
    out["tools"].append({
        "content": text,
        "calls": [[c.name, json.loads(c.parameters)] for c in calls],
        "stream_text": "".join(t for t, _ in chunks),
        "stream_calls": [[c.name, c.parameters] for _, cs in chunks for c in cs],
    })
for text in job["thinking_texts"]:
    reasoning, content = ReasoningParser(model_type="qwen3-thinking").parse_non_stream(text)
    out["reasoning"].append([reasoning, content])
print(json.dumps(out))
"""


def serve(variant: str, model=None) -> Server:
    return Server(variant, "cpu", model=str(model) if model else None, progress=False).start()


def ask(server: Server, prompt: str, **kwargs):
    return server.client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=96, **kwargs,
    )  # fmt: skip


def raw_stream(server: Server, prompt: str, **kwargs) -> list[str]:
    stream = ask(server, prompt, stream=True, extra_body=RAW, **kwargs)
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


@pytest.fixture(scope="module")
def outputs(sglang_check_python):
    # Parsers on: the cells' flags. Parsers off: the same fixture as a Base variant (no parser
    # flags), tools still rendered into the prompt (tool_choice="none" parses nothing).
    on, off = serve("instruct"), serve("base-1.2b", fixture_path("instruct"))
    try:
        parsed = [ask(on, p, tools=[WEATHER_TOOL]) for p in TOOL_PROMPTS]
        streamed = []
        for prompt in TOOL_PROMPTS:
            merged = ToolCallAccumulator()
            deltas = 0
            for chunk in ask(on, prompt, tools=[WEATHER_TOOL], stream=True):
                for part in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    merged.add(part)
                    deltas += 1
            streamed.append((merged.calls, deltas))
        raw = [
            {
                "text": ask(off, p, tools=[WEATHER_TOOL], tool_choice="none", extra_body=RAW)
                .choices[0].message.content,
                "pieces": raw_stream(off, p, tools=[WEATHER_TOOL], tool_choice="none"),
            }
            for p in TOOL_PROMPTS
        ]  # fmt: skip
    finally:
        on.stop()
        off.stop()
    on, off = serve("thinking"), serve("base-1.2b", fixture_path("thinking"))
    try:
        thought = [ask(on, p).choices[0].message for p in THINKING_PROMPTS]
        raw_thinking = [
            ask(off, p, extra_body=RAW).choices[0].message.content for p in THINKING_PROMPTS
        ]
    finally:
        on.stop()
        off.stop()
    job = {"tools": [WEATHER_TOOL], "tool_texts": raw, "thinking_texts": raw_thinking}
    done = subprocess.run([sglang_check_python, "-c", SGLANG_PARSE], input=json.dumps(job),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sglang = json.loads(done.stdout)
    return {"parsed": parsed, "streamed": streamed, "raw": raw, "thought": thought,
            "raw_thinking": raw_thinking, "sglang": sglang}  # fmt: skip


@pytest.mark.timeout(900)
def test_the_same_calls_from_both_engines(outputs):
    for i, prompt in enumerate(TOOL_PROMPTS):
        vllm_calls = [
            [c.function.name, json.loads(c.function.arguments)]
            for c in outputs["parsed"][i].choices[0].message.tool_calls or []
        ]
        sglang = outputs["sglang"]["tools"][i]
        assert "<|tool_call_start|>" in outputs["raw"][i]["text"], (prompt, outputs["raw"][i])
        assert sglang["calls"] == vllm_calls and vllm_calls, prompt
        # Streaming: SGLang sends each call whole, in one chunk, with the same arguments.
        streamed = [[name, json.loads(args)] for name, args in sglang["stream_calls"]]
        assert streamed == vllm_calls, prompt
        # vLLM's stream merges (by the cookbook's accumulator) into the same calls, from
        # fragments: more deltas than calls.
        merged, deltas = outputs["streamed"][i]
        assert [[c.name, c.args] for c in merged] == vllm_calls
        assert deltas > len(vllm_calls)


@pytest.mark.timeout(900)
def test_text_around_a_call(outputs):
    for i, item in enumerate(outputs["raw"]):
        before = item["text"].split("<|tool_call_start|>", 1)[0].strip()
        sglang = outputs["sglang"]["tools"][i]
        # SGLang's non-streaming content: only the text before the first call block.
        assert sglang["content"].strip() == before
        vllm_content = (outputs["parsed"][i].choices[0].message.content or "").strip()
        assert vllm_content == before or not before


@pytest.mark.timeout(900)
def test_the_same_reasoning_split(outputs):
    for message, raw, (reasoning, content) in zip(
        outputs["thought"], outputs["raw_thinking"], outputs["sglang"]["reasoning"], strict=True
    ):
        assert "</think>" in raw, raw
        assert reasoning.strip() == (reasoning_of(message) or "").strip()
        assert content.strip() == (message.content or "").strip()
