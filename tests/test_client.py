"""Client helpers on hand-made responses shaped like SGLang's and vLLM's."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest

from cookbook import client
from cookbook.client import ToolCallAccumulator, reasoning_of, stream_events


def _delta(content=None, tool_calls=None, **extra):
    return NS(
        content=content,
        tool_calls=tool_calls,
        model_extra=extra,
        **{k: None for k in ("reasoning_content", "reasoning") if k not in extra},
    )


def _chunk(delta, finish=None):
    return NS(choices=[NS(delta=delta, finish_reason=finish)], usage=None)


def _call_delta(index, id=None, name=None, arguments=None):
    return NS(index=index, id=id, function=NS(name=name, arguments=arguments))


def test_sampling_presets_come_from_the_recipes():
    assert client.sampling("thinking") == {
        "temperature": 0.05,
        "extra_body": {"top_k": 50, "repetition_penalty": 1.05},
    }
    assert client.sampling("base-350m")["extra_body"] == {"min_p": 0.15, "repetition_penalty": 1.05}


@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_reasoning_under_either_name(name):
    assert reasoning_of(NS(**{name: "because"})) == "because"
    assert reasoning_of(NS(model_extra={name: "extra"})) == "extra"
    assert reasoning_of(NS(content="x", model_extra={})) is None


def test_stream_splits_reasoning_content_and_calls():
    chunks = [
        _chunk(_delta(reasoning="Let me ")),
        _chunk(_delta(reasoning_content="think.")),
        _chunk(_delta(content="The answer")),
        _chunk(_delta(content=" is 7.")),
        _chunk(_delta(), finish="stop"),
    ]
    result = client.StreamResult()
    events = list(stream_events(chunks, result))
    assert [e.kind for e in events] == ["reasoning", "reasoning", "content", "content"]
    assert (result.reasoning, result.content, result.finish_reason) == (
        "Let me think.",
        "The answer is 7.",
        "stop",
    )


def test_streamed_calls_vllm_style_fragments():
    acc = ToolCallAccumulator()
    acc.add(_call_delta(0, "call_a", "get_weather", ""))
    acc.add(_call_delta(0, None, None, '{"location": '))
    acc.add(_call_delta(0, None, None, '"Paris"}'))
    acc.add(_call_delta(1, "call_b", "get_weather", '{"location": "Oslo"}'))
    assert [(c.id, c.name, c.args) for c in acc.calls] == [
        ("call_a", "get_weather", {"location": "Paris"}),
        ("call_b", "get_weather", {"location": "Oslo"}),
    ]


def test_streamed_calls_sglang_style_index_restarts():
    acc = ToolCallAccumulator()
    acc.add(_call_delta(0, "call_1", "get_weather", '{"location": "Paris"}'))
    acc.add(_call_delta(0, "call_2", "calculate", '{"expression": "2 + 2"}'))
    assert [(c.name, c.args) for c in acc.calls] == [
        ("get_weather", {"location": "Paris"}),
        ("calculate", {"expression": "2 + 2"}),
    ]


def _completion(content=None, calls=(), reasoning=None, finish="stop"):
    message = NS(content=content, reasoning_content=reasoning, reasoning=None, model_extra={},
                 tool_calls=[NS(id=f"c{i}", function=NS(name=n, arguments=json.dumps(a))) for i, (n, a) in enumerate(calls)] or None)  # fmt: skip
    return NS(choices=[NS(message=message, finish_reason=finish)], usage=None)


class FakeClient:
    """Replays completions and records what was sent."""

    def __init__(self, replies):
        self.replies, self.sent = list(replies), []
        self.chat = NS(completions=NS(create=self._create))

    def _create(self, **kwargs):
        self.sent.append(kwargs)
        return self.replies.pop(0)


def test_tool_loop_executes_and_feeds_results_back():
    fake = FakeClient([
        _completion(calls=[("get_weather", {"location": "Paris"}), ("nope", {})], finish="tool_calls"),
        _completion(content="It is 18 C in Paris."),
    ])  # fmt: skip
    registry = {"get_weather": lambda location: {"location": location, "temperature_c": 18}}
    result = client.run_tool_loop(
        fake,
        "m",
        [{"role": "user", "content": "Weather in Paris?"}],
        tools=[],
        registry=registry,
        variant="instruct",
    )
    assert result.answer.content == "It is 18 C in Paris."
    assert result.rounds[0].results == [
        {"location": "Paris", "temperature_c": 18},
        {"error": "unknown tool 'nope'; available: get_weather"},
    ]
    second = fake.sent[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(second[2]["content"]) == {"location": "Paris", "temperature_c": 18}
    assert fake.sent[0]["temperature"] == 0.1 and fake.sent[0]["extra_body"]["top_k"] == 50


def test_tool_loop_gives_up_after_max_rounds():
    fake = FakeClient([_completion(calls=[("get_weather", {"location": "Oslo"})])] * 3)
    with pytest.raises(client.ToolLoopError, match="after 2 rounds"):
        client.run_tool_loop(
            fake, "m", [], tools=[], registry={"get_weather": lambda location: {}}, max_rounds=2
        )


def test_bad_tool_arguments_become_an_error_result():
    call = client.ToolCall("c", "get_weather", json.dumps({"city": "Paris"}))
    result = client.run_tool({"get_weather": lambda location: location}, call)
    assert "TypeError" in result["error"]


def test_image_data_uri(tmp_path):
    png = tmp_path / "dot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    assert client.image_data_uri(png).startswith("data:image/png;base64,iVBORw0KGg")
    assert client.image_part("https://example.com/a.jpg") == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/a.jpg"},
    }
    with pytest.raises(ValueError, match="does not look like an image"):
        client.image_data_uri(tmp_path / "notes.txt")


def test_reasoning_field_names_the_server_convention():
    sglang = _completion(content="7", reasoning="3 + 4")
    assert client.reply_of(sglang).reasoning_field == "reasoning_content"
    vllm = NS(
        choices=[
            NS(
                message=NS(content="7", reasoning="3 + 4", tool_calls=None, model_extra={}),
                finish_reason="stop",
            )
        ],
        usage=None,
    )
    reply = client.reply_of(vllm)
    assert (reply.reasoning, reply.reasoning_field) == ("3 + 4", "reasoning")


def test_images_and_tools_are_never_sent_together():
    image_turn = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                client.image_part("https://example.com/a.png"),
            ],
        }
    ]
    with pytest.raises(ValueError, match="an image and tools in one request"):
        client.check_vl_turn(image_turn, [{"type": "function"}])
    client.check_vl_turn(image_turn, None)
    client.check_vl_turn([{"role": "user", "content": "Weather in Oslo?"}], [{"type": "function"}])


def test_a_claim_about_the_model_is_asserted_on_a_fixture_and_only_reported_on_a_real_model(
    capsys,
):
    from types import SimpleNamespace

    fixture, real = SimpleNamespace(serves_fixture=True), SimpleNamespace(serves_fixture=False)
    assert client.about_the_model(fixture, True, "it called the tool") is None  # no stray output
    with pytest.raises(AssertionError, match="it called the tool"):
        client.about_the_model(fixture, False, "it called the tool")
    client.about_the_model(real, False, "it called the tool")  # a real model's sample: reported
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "✓ it called the tool"
    assert shown[-1].startswith("✗ it called the tool: not in this sample")
