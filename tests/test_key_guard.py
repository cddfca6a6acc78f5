"""The per-launch API key guards every path of a launched server but its health check.

The vLLM engines: every route the running CPU engine registers (read from the app itself by a
test-only middleware, not listed here), every method it takes and OPTIONS, without a key and with
a wrong one. SGLang: what its own --api-key leaves open, computed from the pinned SGLang's route
table (and the /metrics mount of --enable-metrics) and auth code, must be what data/recipes.yaml
says it is; tests/test_sglang_key.py measures the same on the running server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from cookbook.engine_side.cookbook_key_guard import RequireKey
from cookbook.launch_plans import cpu_engine_python, plan_launch
from cookbook.recipes import load_recipes
from cookbook.server import Server

REPO = Path(__file__).resolve().parent.parent
PROBE_DIR = Path(__file__).resolve().parent / "engine_probe"


# ----- the middleware alone ---------------------------------------------------------------------


def _call(path: str, headers=(), kind: str = "http", root_path: str = "", open_paths="/health"):
    """(paths that reached the app, messages the guard sent) for one request."""
    sent, reached = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    guard = RequireKey(app, key="k3y", open_paths=open_paths)
    scope = {"type": kind, "path": path, "root_path": root_path, "headers": list(headers)}
    asyncio.run(guard(scope, receive, send))
    return reached, sent


def _bearer(token: str):
    return [(b"authorization", f"Bearer {token}".encode())]


def test_guard_requires_the_key_except_on_open_paths():
    assert _call("/health")[0] == ["/health"]
    assert _call("/invocations", _bearer("k3y"))[0] == ["/invocations"]
    for path, headers in [
        ("/invocations", ()),
        ("/invocations", _bearer("wrong")),
        ("/invocations", [(b"authorization", b"Basic k3y")]),
        ("/health/", ()),  # exact paths only: no prefix, no trailing slash
        ("/health_generate", ()),
    ]:
        reached, sent = _call(path, headers)
        assert reached == [] and sent[0]["status"] == 401, (path, headers)
    # The header read as vLLM's own check reads it (its authenticate.py): the scheme in any case,
    # then the key exactly as sent after one space.
    assert _call("/invocations", [(b"authorization", b"bearer k3y")])[0] == ["/invocations"]
    for spaced in (b"Bearer  k3y", b"Bearer k3y "):
        reached, sent = _call("/invocations", [(b"authorization", spaced)])
        assert reached == [] and sent[0]["status"] == 401, spaced
    # A proxy prefix is not a way around it.
    assert _call("/api/health", root_path="/api")[0] == ["/api/health"]
    assert _call("/api/tokenize", root_path="/api")[1][0]["status"] == 401


def test_guard_closes_websockets_and_refuses_to_start_without_a_key(monkeypatch):
    reached, sent = _call("/v1/realtime", kind="websocket", open_paths="")
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="no API key in VLLM_API_KEY"):
        RequireKey(None)


@pytest.mark.engine
def test_both_vllm_engines_load_the_guard():
    guard = load_recipes().engines.key_guard
    for engine in ("vllm-cpu", "vllm"):
        plan = plan_launch("instruct", engine, port=31000)
        at = plan.argv.index("--middleware")
        assert plan.argv[at + 1] == "cookbook_key_guard.RequireKey"
        assert plan.env["PYTHONPATH"].split(":")[0] == str(REPO / "cookbook" / "engine_side")
        assert plan.env["COOKBOOK_OPEN_PATHS"] == ",".join(guard.open_paths) == "/health"


# ----- the real CPU engine -----------------------------------------------------------------------


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)  # /v1/models/{model:path} -> /v1/models/x


def _websocket_status(host: str, port: int, path: str) -> str:
    key = base64.b64encode(b"cookbook-key-test").decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(200).decode("latin-1").split("\r\n", 1)[0]


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    if not cpu_engine_python().exists():
        pytest.fail(f"no CPU engine at {cpu_engine_python()}: run `bash ci/setup.sh cpu-engine`")
    work = tmp_path_factory.mktemp("key")
    routes_file = work / "routes.json"
    patch = pytest.MonkeyPatch()
    # The probe goes on the engine's PYTHONPATH after the cookbook's own directory.
    patch.setenv("PYTHONPATH", str(PROBE_DIR))
    patch.setenv("COOKBOOK_TEST_ROUTES_FILE", str(routes_file))
    server = Server(
        "instruct",
        engine="vllm-cpu",
        progress=False,
        log_dir=work / "logs",
        extra_args=("--middleware", "route_dump.DumpRoutes"),
    )
    try:
        server.start()
        yield server, json.loads(routes_file.read_text())
    finally:
        server.stop()
        patch.undo()


def test_every_route_of_the_running_engine_needs_the_key(guarded_server):
    server, routes = guarded_server
    open_paths = set(load_recipes().engines.key_guard.open_paths)
    http = [r for r in routes if r["kind"] != "WebSocketRoute"]
    paths = {r["path"] for r in http}
    # The routes the issue found open are among those the engine registers, so among those tried.
    assert {"/invocations", "/tokenize", "/detokenize", "/metrics", "/docs", "/load"} <= paths
    assert len(http) > 20, paths
    tried, opened = 0, []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for route in http:
            methods = route["methods"] or ["GET", "POST"]  # a mount takes whatever it serves
            urls = [_concrete(route["path"])]
            if route["kind"] == "Mount":
                urls.append(urls[0].rstrip("/") + "/")
            for url in urls:
                for method in [*methods, "OPTIONS"]:
                    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
                        answer = client.request(method, url, headers=headers, json={})
                        tried += 1
                        if answer.status_code != 401:
                            opened.append((method, url, bool(headers), answer.status_code))
    # Only the open paths answer without the key, whatever the method; GET there is the check.
    assert [o for o in opened if o[1] not in open_paths] == [], f"{tried} requests: {opened}"
    assert {(o[0], o[1]) for o in opened if o[3] == 200} == {("GET", p) for p in open_paths}
    for route in routes:
        if route["kind"] == "WebSocketRoute":
            host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
            assert " 403 " in _websocket_status(host, int(port), _concrete(route["path"])) + " "


def test_the_key_still_opens_generation_and_readiness(guarded_server):
    server, _ = guarded_server
    key = {"Authorization": f"Bearer {server.api_key}"}
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        assert client.post("/invocations", json=body).status_code == 401
        answer = client.post("/invocations", json=body, headers=key)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
        assert client.get("/v1/models", headers=key).json()["data"][0]["id"] == server.model
        assert client.get("/health").status_code == 200


def test_logs_are_private(guarded_server):
    server, _ = guarded_server
    assert stat.S_IMODE(server.log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.log_path.parent.stat().st_mode) == 0o700
    assert server.api_key not in server.log_path.read_text()


def test_default_log_directory_is_private_and_this_users(monkeypatch, tmp_path):
    from cookbook import server as server_module

    monkeypatch.delenv("COOKBOOK_LOG_DIR", raising=False)
    monkeypatch.setattr(server_module.tempfile, "gettempdir", lambda: str(tmp_path))
    made = server_module.log_directory()
    assert made.parent == tmp_path and stat.S_IMODE(made.stat().st_mode) == 0o700
    made.chmod(0o755)  # loosened by someone: made private again
    assert stat.S_IMODE(server_module.log_directory().stat().st_mode) == 0o700
    made.rmdir()
    made.symlink_to(tmp_path)  # a link planted in a shared /tmp is refused
    with pytest.raises(server_module.ServerStartError, match="not this user's own directory"):
        server_module.log_directory()


# ----- SGLang: what its --api-key leaves open -------------------------------------------------


SGLANG_PROBE = r"""
import ast, json, sys
from pathlib import Path
import sglang
from sglang.srt.utils.auth import AuthLevel, decide_request_auth

root = Path(sglang.__file__).parent / "srt" / "entrypoints"
routes = []
for name in ("http_server.py", "v1_loads.py", "elastic_ep.py"):
    tree = ast.parse((root / name).read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                continue
            kind = deco.func.attr
            if kind not in ("get", "post", "put", "delete", "api_route", "websocket"):
                continue
            arg = deco.args[0] if deco.args else None
            if isinstance(arg, ast.Constant):
                path = arg.value
            elif isinstance(arg, ast.Call) and len(arg.args) == 2:  # os.environ.get(NAME, default)
                path = arg.args[1].value
            else:
                continue
            routes.append({"path": path, "kind": kind})
# The mount --enable-metrics adds at start-up (add_prometheus_middleware: Mount("/metrics", ...)).
common = Path(sglang.__file__).parent / "srt" / "utils" / "common.py"
for node in ast.walk(ast.parse(common.read_text())):
    if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Mount"
            and node.args and isinstance(node.args[0], ast.Constant)):
        routes.append({"path": node.args[0].value, "kind": "mount"})
open_without_key = sorted({
    r["path"] for r in routes if r["kind"] != "websocket" and decide_request_auth(
        method="GET", path=r["path"], authorization_header=None, api_key="k",
        admin_api_key=None, auth_level=AuthLevel.NORMAL).allowed
})
options_open = decide_request_auth(method="OPTIONS", path="/v1/chat/completions",
    authorization_header=None, api_key="k", admin_api_key=None,
    auth_level=AuthLevel.NORMAL).allowed
print(json.dumps({"routes": len(routes), "open": open_without_key, "options_open": options_open,
                  "websockets": sorted(r["path"] for r in routes if r["kind"] == "websocket")}))
"""


def test_what_sglangs_key_leaves_open_is_what_the_data_says(sglang_check_python):
    out = subprocess.run([sglang_check_python, "-c", SGLANG_PROBE], capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout)
    sglang = load_recipes().engines.sglang
    assert found["routes"] > 50  # the route table was read, not an empty file
    assert found["open"] == sorted(sglang.key_leaves_open)
    assert found["options_open"] and found["websockets"] == ["/v1/realtime"]
    for path in sglang.key_leaves_open:
        assert path in sglang.key_note
    assert "/v1/realtime" in sglang.key_note and "OPTIONS" in sglang.key_note


def test_sglang_has_no_middleware_flag(sglang_check_python):
    """Why SGLang gets no cookbook guard: the pinned server has no option to load one."""
    code = (
        "import argparse, json; from sglang.srt.server_args import ServerArgs; "
        "p = argparse.ArgumentParser(); ServerArgs.add_cli_args(p); "
        "print(json.dumps([o for a in p._actions for o in a.option_strings]))"
    )
    out = subprocess.run([sglang_check_python, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    options = json.loads(out.stdout)
    assert "--api-key" in options and [o for o in options if "middleware" in o] == []
