"""Launch plans (no processes): what each engine is asked to run, and bad input."""

from __future__ import annotations

import socket

import pytest

from cookbook import launch_plans, processes, server
from cookbook.launch_plans import plan_launch
from cookbook.recipes import CookbookChoiceError
from cookbook.server import Server, ServerStartError


def _pairs(argv) -> dict[str, str]:
    argv = list(argv)
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


def test_sglang_cpu_plan_is_the_h100_cell_moved_to_the_cpu():
    plan = plan_launch("vl", "sglang-cpu", port=31001)
    flags = _pairs(plan.argv)
    assert plan.argv[1] == "serve" and plan.argv[0].endswith("sglang")
    assert plan.engine == "sglang-cpu" and plan.family == "sglang" and plan.on_cpu
    assert plan.is_fixture and plan.model == "fixture/lfm2-vl-tiny"
    assert flags["--model-path"].endswith("data/fixtures/lfm2-vl-tiny")
    assert flags["--served-model-name"] == "fixture/lfm2-vl-tiny"
    assert (flags["--host"], flags["--port"]) == ("127.0.0.1", "31001")
    assert (flags["--device"], flags["--attention-backend"]) == ("cpu", "torch_native")
    assert flags["--tool-call-parser"] == "lfm2" and "--trust-remote-code" in plan.argv
    # The stand-ins reach every SGLang process through the environment; CUDA IPC is dropped.
    assert plan.env["SGLANG_USE_CPU_ENGINE"] == "1"
    assert plan.env["PYTHONPATH"].split(":")[0].endswith("cookbook/engine_side/sglang_cpu")
    assert "SGLANG_USE_CUDA_IPC_TRANSPORT" not in plan.env
    assert plan.api_key_flag == "--api-key" and "--api-key" not in plan.argv
    assert "stand-ins" in plan.notes[0] and "not LFM2.5" in plan.notes[0]
    thinking = _pairs(plan_launch("thinking", "sglang-cpu", port=31001).argv)
    assert thinking["--reasoning-parser"] == "qwen3-thinking"  # SGLang's own name, as the cell


def test_sglang_cpu_departure_from_the_gpu_command_is_shown_line_by_line():
    from cookbook import commands

    diff = commands.cpu_launch_diff("vl", "data/fixtures/lfm2-vl-tiny", "fixture/lfm2-vl-tiny")
    removed = [d.text.strip() for d in diff if d.tag == "-"]
    added = [d.text.strip() for d in diff if d.tag == "+"]
    assert removed == [
        "SGLANG_USE_CUDA_IPC_TRANSPORT=1",
        "SGLANG_USE_IPC_POOL_HANDLE_CACHE=1",
        "--model-path LiquidAI/LFM2.5-VL-1.6B",
    ]
    assert "--device cpu" in added and "--model-path data/fixtures/lfm2-vl-tiny" in added
    assert "PYTHONPATH=cookbook/engine_side/sglang_cpu" in added
    kept = [d.text.strip() for d in diff if d.tag == " "]
    assert kept[:3] == ["sglang serve", "--trust-remote-code", "--tp 1"]
    spec = commands.cpu_launch_spec("vl", "m", "m")
    assert not spec.verified and spec.derived_from == "h100/vl"


def test_cpu_plan_uses_the_fixture_and_the_cells_parsers():
    plan = plan_launch("thinking", "vllm-cpu", port=31001)
    flags = _pairs(plan.argv)
    assert plan.is_fixture and plan.model == "fixture/lfm2-tiny-thinking"
    assert flags["--model"].endswith("data/fixtures/lfm2-tiny-thinking")
    assert (flags["--host"], flags["--port"]) == ("127.0.0.1", "31001")
    assert flags["--tool-call-parser"] == "lfm2" and "--enable-auto-tool-choice" in plan.argv
    assert flags["--reasoning-parser"] == "qwen3"  # vLLM's name for SGLang's qwen3-thinking
    assert plan.api_key_env == "VLLM_API_KEY" and "--api-key" not in plan.argv
    assert plan.env["HF_HUB_OFFLINE"] == "1"
    assert "not LFM2.5" in plan.notes[0]


def test_cpu_plan_drops_parsers_a_model_lacks():
    base = plan_launch("base-1.2b", "vllm-cpu", port=31002)
    assert "--tool-call-parser" not in base.argv and "--reasoning-parser" not in base.argv
    jp = plan_launch("jp-original", "vllm-cpu", port=31002)
    assert "--tool-call-parser" not in jp.argv
    chat = plan_launch("instruct", "vllm-cpu", port=31002)
    assert "--reasoning-parser" not in chat.argv and "--tool-call-parser" in chat.argv


def test_sglang_plan_is_the_verified_cell_on_loopback():
    plan = plan_launch("vl-450m", "sglang", hw="b200", port=31003)
    assert plan.argv[:2] == ("sglang", "serve") or plan.argv[1] == "serve"
    flags = _pairs(plan.argv)
    assert flags["--model-path"] == "LiquidAI/LFM2.5-VL-450M"
    assert (flags["--host"], flags["--port"]) == ("127.0.0.1", "31003")
    assert flags["--mm-attention-backend"] == "fa4"
    assert plan.env == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # so that CUDA_VISIBLE_DEVICES means nvidia-smi's index
        "SGLANG_USE_CUDA_IPC_TRANSPORT": "1",
        "SGLANG_USE_IPC_POOL_HANDLE_CACHE": "1",
    }
    assert plan.api_key_flag == "--api-key" and "--api-key" not in plan.argv


def test_tp_override_launches_the_playground_command():
    plain = plan_launch("8b-a1b", "sglang", hw="h100", port=31005)
    plan = plan_launch("8b-a1b", "sglang", hw="h100", port=31005, tp=2)
    # The Playground's --tp replaces the cell's, in its place; nothing else changes.
    assert plan.argv.count("--tp") == 1 and "--tp-size" not in plan.argv
    assert _pairs(plan.argv)["--tp"] == "2" and _pairs(plain.argv)["--tp"] == "1"
    at = plan.argv.index("--tp")
    assert plain.argv[:at] == plan.argv[:at] and plain.argv[at + 2 :] == plan.argv[at + 2 :]
    with pytest.raises(CookbookChoiceError, match="valid: 1, 2"):
        plan_launch("8b-a1b", "sglang", hw="h100", port=31005, tp=8)
    cpu = plan_launch("8b-a1b", "vllm-cpu", port=31005, tp=2)
    assert "--tp" not in cpu.argv and "TP override 2 applies to the SGLang command only" in (
        " ".join(cpu.notes)
    )


def test_sglang_plan_with_a_local_model_keeps_the_served_name():
    plan = plan_launch("instruct", "sglang", hw="h100", port=31004, model="/models/lfm")
    flags = _pairs(plan.argv)
    assert flags["--model-path"] == "/models/lfm"
    assert flags["--served-model-name"] == plan.model == "LiquidAI/LFM2.5-1.2B-Instruct"


def test_sglang_without_a_known_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerStartError, match="pass hw=... .*or use engine='sglang-cpu'"):
        plan_launch("instruct", "sglang")


def test_vllm_plan_follows_the_lambda_flags():
    plan = plan_launch("8b-a1b", "vllm", port=31005)
    flags = _pairs(plan.argv)
    assert flags["--tensor-parallel-size"] == "1" and flags["--max-model-len"] == "auto"
    assert flags["--gpu-memory-utilization"] == "0.9" and "--trust-remote-code" in plan.argv
    assert flags["--reasoning-parser"] == "qwen3"


def test_auto_without_gpu_is_sglang_on_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/nonexistent")
    sglang = tmp_path / "sglang"
    sglang.touch()
    monkeypatch.setenv("COOKBOOK_SGLANG_BIN", str(sglang))
    assert launch_plans.resolve_engine("auto") == "sglang-cpu"
    monkeypatch.setenv("COOKBOOK_SGLANG_BIN", str(tmp_path / "none"))
    with pytest.raises(
        launch_plans.machine.EngineUnavailableError, match="SGLang is not installed"
    ):
        launch_plans.resolve_engine("auto")
    with pytest.raises(
        CookbookChoiceError, match="valid: auto, sglang, vllm, sglang-cpu, vllm-cpu"
    ):
        launch_plans.resolve_engine("tgi")


def test_unknown_variant_fails_before_anything_runs():
    with pytest.raises(CookbookChoiceError, match="unknown variant 'mega'"):
        Server("mega", engine="sglang-cpu")


@pytest.mark.engine
def test_missing_model_directory_fails_at_once(tmp_path):
    with pytest.raises(ServerStartError, match="has no config.json"):
        Server("instruct", "sglang-cpu", model=str(tmp_path / "nope"), progress=False).start()


def test_explicit_busy_port_fails_at_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already in use"):
            Server("instruct", engine="sglang-cpu", port=port, progress=False).start()


def test_missing_cpu_engine_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("COOKBOOK_CPU_ENGINE_PYTHON", str(tmp_path / "python"))
    with pytest.raises(ServerStartError, match="bash ci/setup.sh cpu-engine"):
        Server("instruct", engine="vllm-cpu", progress=False).start()


def test_connect_to_nothing_is_a_clear_error():
    port = processes.free_port()
    with pytest.raises(
        server.ServerError, match=f"no OpenAI-compatible server answered at http://127.0.0.1:{port}"
    ):
        Server.connect(f"http://127.0.0.1:{port}/v1", api_key="x", timeout_s=1)


def test_api_keys_never_look_like_an_option():
    # SGLang turns its --config file into arguments: a key "-Xh3..." became an option and the
    # launch failed with "--api-key: expected one argument" (seen in a notebook run).
    keys = {server.new_api_key() for _ in range(2000)}
    assert len(keys) == 2000 and not any(k.startswith("-") for k in keys)


def test_a_connected_server_is_the_variant_the_launch_names(tmp_path, monkeypatch):
    import json

    from cookbook import results
    from tests.fake_openai import MODES, FakeServer

    with FakeServer() as fake:
        connected = server.launch("thinking", base_url=fake.base_url, api_key="k", echo=print)
        assert isinstance(connected, server.ConnectedServer) and connected.variant == "thinking"
        # So its notebook's results name the variant it was told, not a default.
        path = tmp_path / "results.json"
        monkeypatch.setenv(results.RESULTS_ENV, str(path))
        results.finish(connected)
        recorded = json.loads(path.read_text())
        assert (recorded["variant"], recorded["model"], recorded["engine"]) == (
            "thinking",
            MODES[0],
            "connect",
        )
