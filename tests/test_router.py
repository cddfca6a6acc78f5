"""Scale-out: the router commands parse with the pinned router's and SGLang's own parsers, and the
router the notebooks launch requires the key, forwards it, and dies with its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest

from cookbook import router
from cookbook.processes import port_in_use
from cookbook.recipes import load_recipes
from tests.test_sglang_parser import sglang_check

REPO = Path(__file__).resolve().parent.parent
CHECKER = REPO / "ci" / "router_argcheck.py"
CASES = [("h100", "8b-a1b"), ("b200", "instruct"), ("h200", "vl"), ("a100", "thinking")]


def router_check(python: str, items: list[dict]) -> dict:
    proc = subprocess.run([python, str(CHECKER)], input=json.dumps(items), capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def parsed(sglang_check_python):
    items, cells = [], []
    for hw, variant in CASES:
        c = router.scale_out_commands(hw, variant, replicas=3)
        items += [
            {"id": f"{hw}/{variant}/one", "form": "one_command", "command": c.one_command},
            {"id": f"{hw}/{variant}/router", "form": "router", "command": c.router},
        ]
        cells += [
            {"id": f"{hw}/{variant}/worker{i}", "command": w} for i, w in enumerate(c.workers)
        ]
        for rank in (0, 1):
            cells.append(
                {"id": f"{hw}/{variant}/node{rank}",
                 "command": router.multi_node_command(hw, variant, rank)}
            )  # fmt: skip
        cells.append({"id": f"{hw}/{variant}/cell", "command": _cell(hw, variant)})
    scale = load_recipes().scale_out
    k8s = " ".join([scale.router_command, *scale.service_discovery_flags])
    items.append({"id": "k8s", "form": "router", "command": k8s})
    routers = {r["id"]: r for r in router_check(sglang_check_python, items)["results"]}
    sglang = {r["id"]: r for r in sglang_check(sglang_check_python, cells)["results"]}
    return routers, sglang


def _cell(hw: str, variant: str) -> str:
    from cookbook import commands

    return commands.render(commands.launch_spec(hw, variant))


@pytest.mark.parametrize(("hw", "variant"), CASES)
def test_the_one_command_form_is_the_cell_with_dp_size(parsed, hw, variant):
    routers, sglang = parsed
    one, cell = routers[f"{hw}/{variant}/one"], sglang[f"{hw}/{variant}/cell"]
    assert one["ok"] and cell["ok"], (one["error"], cell["error"])
    server = one["parsed"]["server"]
    for field in ("model_path", "tp_size", "tool_call_parser", "reasoning_parser", "host", "port"):
        assert server[field] == cell["parsed"][field], field
    assert server["dp_size"] == 3
    assert len(one["parsed"]["workers"]) == 3  # launch_server itself asked for three workers
    assert one["parsed"]["router"]["policy"] == load_recipes().scale_out.policy
    assert one["parsed"]["router"]["port"] == server["port"]


@pytest.mark.parametrize(("hw", "variant"), CASES)
def test_the_two_step_form_routes_to_the_replicas_it_starts(parsed, hw, variant):
    routers, sglang = parsed
    front = routers[f"{hw}/{variant}/router"]
    assert front["ok"], front["error"]
    workers = [sglang[f"{hw}/{variant}/worker{i}"] for i in range(3)]
    assert all(w["ok"] for w in workers), [w["error"] for w in workers]
    cell = sglang[f"{hw}/{variant}/cell"]["parsed"]
    urls = [f"http://{w['parsed']['host']}:{w['parsed']['port']}" for w in workers]
    assert front["parsed"]["router"]["worker_urls"] == urls
    assert {w["parsed"]["host"] for w in workers} == {"127.0.0.1"}  # only the router is public
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "1", "2"]
    for w in workers:  # every replica is the cell itself, but for its port and address
        same = {k: v for k, v in w["parsed"].items() if k not in ("host", "port")}
        assert same == {k: v for k, v in cell.items() if k not in ("host", "port")}


@pytest.mark.parametrize(("hw", "variant"), CASES)
def test_the_multi_node_command_parses_per_node(parsed, hw, variant):
    _, sglang = parsed
    for rank in (0, 1):
        node = sglang[f"{hw}/{variant}/node{rank}"]
        assert node["ok"], node["error"]
        assert node["parsed"]["tp_size"] == load_recipes().scale_out.multi_node.tp


def test_service_discovery_flags_parse(parsed):
    routers, _ = parsed
    k8s = routers["k8s"]
    assert k8s["ok"], k8s["error"]
    assert k8s["parsed"]["router"]["service_discovery"] is True
    assert k8s["parsed"]["router"]["selector"] == {"app": "lfm25-worker"}


def test_the_policies_are_the_routers_own():
    import argparse

    from sglang_router.router_args import RouterArgs

    parser = argparse.ArgumentParser()
    RouterArgs.add_cli_args(parser)
    choices = parser._option_string_actions["--policy"].choices
    scale = load_recipes().scale_out
    assert set(scale.policies) <= set(choices) and scale.policy == RouterArgs.policy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 1}, "replicas 1: give a whole number of at least 2"),
        ({"replicas": "2"}, "replicas '2'"),
        (
            {"policy": "fastest"},
            "router policy 'fastest' is not one of sglang-router's: cache_aware",
        ),
    ],
)
def test_bad_scale_out_input_names_what_is_valid(kwargs, message):
    with pytest.raises(router.RouterError, match=message):
        router.scale_out_commands("h100", "instruct", **kwargs)


def test_a_router_needs_workers_with_one_key():
    a = SimpleNamespace(api_key="k1", model="m", base_url="http://127.0.0.1:1")
    b = SimpleNamespace(api_key="k2", model="m", base_url="http://127.0.0.1:2")
    with pytest.raises(router.RouterError, match="share one API key"):
        router.Router([a, b])
    with pytest.raises(router.RouterError, match="share one API key"):
        router.Router([])


# ----- the router itself, in front of stand-in workers -------------------------------------------


class _Worker(BaseHTTPRequestHandler):
    """A stand-in replica: healthy, counts requests on /metrics, records the key it was sent."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._send(200, "{}")
        if self.path == "/metrics":
            served = self.server.served
            text = (
                f'vllm:request_success_total{{finished_reason="stop"}} {served}.0\n'
                'vllm:request_success_total{finished_reason="length"} 1.0\n'
                "vllm:request_success_total_created 12345.0\n"
            )
            return self._send(200, text, "text/plain")
        return self._send(404, "{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.authorizations.append(self.headers.get("Authorization"))
        self.server.served += 1
        body = {"id": "x", "object": "chat.completion", "model": "stand-in", "created": 0,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hello"}}]}  # fmt: skip
        return self._send(200, json.dumps(body))


@pytest.fixture
def stand_in_workers():
    servers = []
    for _ in range(2):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Worker)
        httpd.served, httpd.authorizations = 0, []
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    workers = [
        SimpleNamespace(api_key="the-key-0123456789", model="stand-in", engine="vllm-cpu",
                        base_url=f"http://127.0.0.1:{s.server_address[1]}", httpd=s)
        for s in servers
    ]  # fmt: skip
    yield workers
    for s in servers:
        s.shutdown()


def test_the_router_requires_the_key_and_forwards_it(stand_in_workers):
    gateway = router.Router(stand_in_workers, policy="round_robin").start()
    try:
        url = f"{gateway.base_url}/v1/chat/completions"
        body = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        assert httpx.post(url, json=body, headers=bad, timeout=30).status_code == 401
        good = {"Authorization": f"Bearer {gateway.api_key}"}
        answers = [httpx.post(url, json=body, headers=good, timeout=30) for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        seen = [w.httpd.authorizations for w in stand_in_workers]
        assert [len(s) for s in seen] == [2, 2]  # round robin
        assert {a for s in seen for a in s} == {f"Bearer {gateway.api_key}"}
        for path in load_recipes().scale_out.router_open_paths:
            assert httpx.get(gateway.base_url + path, timeout=10).status_code == 200, path
        assert router.request_counts(stand_in_workers) == [3, 3]  # summed over labels
        cmdline = " ".join(psutil.Process(gateway.pid).cmdline())  # the router retitles itself
        assert gateway.api_key not in cmdline + " ".join(gateway.argv)
    finally:
        gateway.stop()
    assert not port_in_use("127.0.0.1", gateway.port)


OWNER = """
import sys, time
from types import SimpleNamespace
from cookbook import router
workers = [SimpleNamespace(api_key="k" * 20, model="m", base_url=url) for url in sys.argv[1:]]
gateway = router.Router(workers).start()
print(gateway.pid, gateway.port, flush=True)
time.sleep(600)
"""


def test_the_router_dies_with_its_owner_even_on_sigkill(stand_in_workers):
    urls = [w.base_url for w in stand_in_workers]
    owner = subprocess.Popen([sys.executable, "-c", OWNER, *urls], stdout=subprocess.PIPE,
                             text=True, cwd=REPO)  # fmt: skip
    try:
        pid, port = map(int, owner.stdout.readline().split())
        assert psutil.pid_exists(pid) and port_in_use("127.0.0.1", port)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            psutil.pid_exists(pid) or port_in_use("127.0.0.1", port)
        ):
            time.sleep(0.2)
        assert not psutil.pid_exists(pid) and not port_in_use("127.0.0.1", port)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_a_router_that_cannot_reach_its_workers_fails_with_its_log():
    dead = SimpleNamespace(api_key="k" * 20, model="m", base_url="http://127.0.0.1:9")
    gateway = router.Router([dead], startup_timeout_s=3)
    with pytest.raises(router.RouterError, match="did not list its workers healthy within 3 s"):
        gateway.start()
    assert not gateway.alive


# ----- where SGLang replicas go on a GPU box (a recorded nvidia-smi) ------------------------------


def test_sglang_replicas_get_a_gpu_each_when_there_are_enough(tmp_path, monkeypatch):
    from tests.conftest import fake_nvidia_smi_env

    monkeypatch.setenv("PATH", fake_nvidia_smi_env(tmp_path, "b200")["PATH"])  # four B200s
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the first GPU the server may use
    layout, notes = router._worker_layout("sglang", 3, load_recipes())
    assert [p["env"]["CUDA_VISIBLE_DEVICES"] for p in layout] == ["1", "2", "3"]
    assert all(p["extra_args"] == ("--enable-metrics",) for p in layout)  # for request_counts
    assert notes == ["3 replicas on GPUs 1, 2, 3"]


def test_sglang_replicas_share_one_gpu_with_a_smaller_memory_share(tmp_path, monkeypatch):
    from tests.conftest import fake_nvidia_smi_env

    monkeypatch.setenv("PATH", fake_nvidia_smi_env(tmp_path, "h200")["PATH"])  # one H200
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    layout, [note] = router._worker_layout("sglang", 2, load_recipes())
    share = str(load_recipes().scale_out.shared_gpu_mem_fraction)
    assert [p["env"]["CUDA_VISIBLE_DEVICES"] for p in layout] == ["0", "0"]
    assert all(p["extra_args"][-2:] == ("--mem-fraction-static", share) for p in layout)
    assert "share GPU 0" in note and "not the scaling" in note


def test_cpu_replicas_need_no_placement():
    for engine in ("vllm-cpu", "sglang-cpu"):  # the CPU launch has --enable-metrics already
        assert router._worker_layout(engine, 2, load_recipes()) == ([{}, {}], [])
    assert "--enable-metrics" in load_recipes().engines.sglang_cpu.flags
