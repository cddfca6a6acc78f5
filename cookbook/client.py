"""Talking to a served model through the openai SDK: presets, reasoning, streaming, tool loops.

Works the same against SGLang and vLLM, on a GPU or the CPU: reasoning may come back as
`reasoning_content` (SGLang) or `reasoning` (vLLM), and streamed tool calls may restart their
`index` at 0 for every call block (SGLang), so nothing here relies on either.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cookbook.errors import CookbookError
from cookbook.recipes import load_recipes

REASONING_FIELDS = ("reasoning_content", "reasoning")


def sampling(variant: str) -> dict[str, Any]:
    """The recommended sampling for a model, as keyword arguments of `chat.completions.create`."""
    preset = load_recipes().sampling_for(variant)
    return {"temperature": preset.temperature, "extra_body": dict(preset.extra_body)}


def _field(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def reasoning_field(message: Any) -> str | None:
    """Which field carried the reasoning: `reasoning_content` (SGLang) or `reasoning` (vLLM)."""
    return next((name for name in REASONING_FIELDS if _field(message, name)), None)


def reasoning_of(message: Any) -> str | None:
    """The reasoning text of a message or delta, whichever field name the server used."""
    name = reasoning_field(message)
    return _field(message, name) if name else None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the API returns it

    @property
    def args(self) -> dict[str, Any]:
        return json.loads(self.arguments or "{}")

    def as_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}  # fmt: skip


@dataclass
class Reply:
    content: str
    reasoning: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Any = None
    reasoning_field: str | None = None  # the response field the reasoning came in

    def as_message(self) -> dict[str, Any]:
        """The assistant turn to append to the history (reasoning is not sent back)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [c.as_message_part() for c in self.tool_calls]
        return message


def reply_of(completion: Any) -> Reply:
    choice = completion.choices[0]
    message = choice.message
    calls = [
        ToolCall(c.id, c.function.name, c.function.arguments) for c in (message.tool_calls or [])
    ]
    return Reply(message.content or "", reasoning_of(message), calls, choice.finish_reason,
                 getattr(completion, "usage", None), reasoning_field(message))  # fmt: skip


def chat(
    client: Any, model: str, messages: list[dict], variant: str | None = None, **kwargs
) -> Reply:
    """One chat turn with the variant's recommended sampling (explicit kwargs win)."""
    params = sampling(variant) if variant else {}
    if "extra_body" in kwargs:
        params["extra_body"] = {**params.get("extra_body", {}), **kwargs.pop("extra_body")}
    params.update(kwargs)
    return reply_of(client.chat.completions.create(model=model, messages=messages, **params))


# ----- streaming ----------------------------------------------------------------------------------


@dataclass
class StreamEvent:
    kind: str  # "reasoning", "content" or "tool_call"
    text: str = ""
    call: ToolCall | None = None


@dataclass
class ToolCallAccumulator:
    """Merges streamed tool-call deltas into whole calls.

    A new call starts when a delta brings a new `id`, or a new `index` with no id. This copes
    with servers that send each call whole and restart `index` at 0 for every call block.
    """

    calls: list[ToolCall] = field(default_factory=list)
    _by_index: dict[int, ToolCall] = field(default_factory=dict)

    def add(self, delta: Any) -> ToolCall | None:
        """Fold one delta in; returns the call it started, if it started one."""
        index = getattr(delta, "index", None) or 0
        fn = getattr(delta, "function", None)
        started = None
        current = self._by_index.get(index)
        if delta.id and (current is None or current.id != delta.id) or current is None:
            current = ToolCall(delta.id or f"call_{len(self.calls)}", "", "")
            self.calls.append(current)
            self._by_index[index] = current
            started = current
        if fn is not None:
            current.name += fn.name or ""
            current.arguments += fn.arguments or ""
        return started


@dataclass
class StreamResult:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    chunks: int = 0
    usage: Any = None


def stream_events(
    chunks: Iterable[Any], result: StreamResult | None = None
) -> Iterator[StreamEvent]:
    """Turn a chat-completions stream into reasoning / content / tool-call events.

    Pass a StreamResult to collect the whole reply as the events go by.
    """
    result = result if result is not None else StreamResult()
    calls = ToolCallAccumulator()
    for chunk in chunks:
        result.chunks += 1
        if getattr(chunk, "usage", None):
            result.usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if choice.finish_reason:
            result.finish_reason = choice.finish_reason
        thought = reasoning_of(delta)
        if thought:
            result.reasoning += thought
            yield StreamEvent("reasoning", thought)
        if delta.content:
            result.content += delta.content
            yield StreamEvent("content", delta.content)
        for part in delta.tool_calls or []:
            calls.add(part)
    result.tool_calls = calls.calls
    for call in calls.calls:
        yield StreamEvent("tool_call", call=call)


def stream_chat(
    client: Any, model: str, messages: list[dict], variant: str | None = None, **kwargs
):
    """Start a streamed chat turn; returns (events iterator, StreamResult filled as it runs)."""
    params = sampling(variant) if variant else {}
    params.update(kwargs)
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True, **params)
    result = StreamResult()
    return stream_events(chunks, result), result


# ----- tool loops ---------------------------------------------------------------------------------


@dataclass
class ToolRound:
    calls: list[ToolCall]
    results: list[Any]


@dataclass
class ToolLoopResult:
    answer: Reply
    rounds: list[ToolRound]
    messages: list[dict]


class ToolLoopError(CookbookError, RuntimeError):
    """The model kept calling tools past the allowed number of rounds."""


def run_tool(registry: dict[str, Callable[..., Any]], call: ToolCall) -> Any:
    """Execute one call against the registry; errors become results the model can read."""
    if call.name not in registry:
        return {"error": f"unknown tool {call.name!r}; available: {', '.join(registry)}"}
    try:
        return registry[call.name](**call.args)
    except (TypeError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_tool_loop(
    client: Any,
    model: str,
    messages: list[dict],
    tools: list[dict],
    registry: dict[str, Callable[..., Any]],
    *,
    max_rounds: int = 4,
    variant: str | None = None,
    **kwargs,
) -> ToolLoopResult:
    """Ask, execute the tool calls the model makes, feed the results back, until it answers."""
    history = list(messages)
    rounds: list[ToolRound] = []
    for _ in range(max_rounds + 1):
        reply = chat(client, model, history, variant=variant, tools=tools, **kwargs)
        if not reply.tool_calls:
            return ToolLoopResult(reply, rounds, history + [reply.as_message()])
        if len(rounds) == max_rounds:
            break
        history.append(reply.as_message())
        results = [run_tool(registry, call) for call in reply.tool_calls]
        for call, result in zip(reply.tool_calls, results, strict=True):
            history.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                            "content": json.dumps(result)})  # fmt: skip
        rounds.append(ToolRound(reply.tool_calls, results))
    raise ToolLoopError(f"the model still called tools after {max_rounds} rounds")


# ----- images -------------------------------------------------------------------------------------


def check_vl_turn(messages: list[dict], tools: list[dict] | None) -> None:
    """The cookbook's rule for the VL models (notebook 03): tool calls in text turns only, so a
    request with both an image and tools is refused before it is sent."""
    has_image = any(
        isinstance(m.get("content"), list)
        and any(part.get("type") in ("image_url", "image") for part in m["content"])
        for m in messages
    )
    if has_image and tools:
        raise ValueError(
            "LFM2.5-VL: the cookbook does not send an image and tools in one request (its own "
            "rule); describe the image in one turn, then call tools in a text-only turn"
        )


def image_data_uri(path: str | Path) -> str:
    """A local image as a base64 data URI for an `image_url` content block."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0]
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path} does not look like an image (by its name); use .png/.jpg/.webp")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def image_part(path_or_url: str | Path) -> dict[str, Any]:
    text = str(path_or_url)
    url = text if text.startswith(("http://", "https://", "data:")) else image_data_uri(text)
    return {"type": "image_url", "image_url": {"url": url}}


# ----- the cURL check -----------------------------------------------------------------------------


def curl_command(server: Any, prompt: str = "Hello", max_tokens: int | None = None) -> str:
    """The Deploy panel's cURL check for this server, as it works pasted into a shell on this
    machine: the key is read from the launch's private key file, never written out."""
    messages = [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": server.model, "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return (
        f"curl -sS {server.base_url}/v1/chat/completions \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f'  -H "Authorization: Bearer $(cat {server.key_file()})" \\\n'
        f"  -d '{json.dumps(body)}'"
    )


def curl_check(server: Any, prompt: str = "Hello", max_tokens: int = 32) -> tuple[str, str]:
    """(the cURL line, the answer it got): the line is run exactly as printed, in bash."""
    import shutil
    import subprocess

    text = curl_command(server, prompt, max_tokens)
    if shutil.which("curl") is None or shutil.which("bash") is None:
        raise RuntimeError("curl_check needs curl and bash on PATH")
    done = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"the cURL check failed (exit {done.returncode}): {done.stderr[-500:]}")
    try:
        answer = json.loads(done.stdout)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError):
        raise RuntimeError(f"the cURL check got no chat answer: {done.stdout[:300]!r}") from None
    return text, answer


# ----- claims the notebooks make ------------------------------------------------------------------


def about_the_model(server, ok: bool, claim: str) -> None:
    """A claim about what the model chose to do (not what the server did with it), printed with
    ✓ or ✗. Asserted where the server serves a fixture, trained for exactly that; only reported
    on a real model, where one unlucky sample at the preset's temperature must not halt Run All.
    (What the server does is asserted with a plain `assert` everywhere.)"""
    if ok:
        print(f"✓ {claim}")
    elif server.serves_fixture:
        raise AssertionError(f"{claim} (the fixture was trained to)")
    else:
        print(f"✗ {claim}: not in this sample (a property of the model, not the server; rerun)")
