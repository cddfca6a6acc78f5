"""SGLang's own --api-key, measured on the running server route by route.

Engine sglang-cpu runs the real SGLang 0.5.23 HTTP server (the same Python as on a GPU; only the
kernels under it are stood in for). Every route the running app registers (read from the app
itself by a test-only middleware, tests/engine_probe/sglang_site, not listed here), every method
it takes and OPTIONS, without a key and with a wrong one: exactly data/recipes.yaml's
engines.sglang.key_leaves_open answer; every text-generating path refuses a real request that the
key then serves; the open paths return no text of it. The server is the cookbook's own CPU launch
with the flags it gives router workers (scale_out.sglang_worker_flags) added where missing: with
--enable-metrics, so the /metrics mount that flag adds is among the routes tried.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from cookbook import machine
from cookbook.launch_plans import plan_launch
from cookbook.recipes import load_recipes
from cookbook.server import Server

SITE_DIR = Path(__file__).resolve().parent / "engine_probe" / "sglang_site"
PROMPT = "Zebra quokka lantern"  # appears in no metric, help text or log line by chance
REFUSED = (401, 403)
# One server start for the module: up to its start-up timeout and the warm-up, then the requests.
pytestmark = pytest.mark.timeout(1500)


def _generation_requests(model: str) -> dict[str, dict]:
    """A valid request for every path of SGLang's that generates text (each must be registered)."""
    chat = [{"role": "user", "content": PROMPT}]
    return {
        "/generate": {"text": PROMPT, "sampling_params": {"max_new_tokens": 4}},
        "/v1/completions": {"model": model, "prompt": PROMPT, "max_tokens": 4},
        "/v1/chat/completions": {"model": model, "messages": chat, "max_tokens": 4},
        "/invocations": {"model": model, "messages": chat, "max_tokens": 4},
        "/vertex_generate": {
            "instances": [{"text": PROMPT}],
            "parameters": {"sampling_params": {"max_new_tokens": 4}},
        },
        "/api/chat": {"model": model, "messages": chat, "stream": False},
        "/api/generate": {"model": model, "prompt": PROMPT, "stream": False},
        "/v1/messages": {"model": model, "messages": chat, "max_tokens": 4},
        "/v1/responses": {"model": model, "input": PROMPT, "max_output_tokens": 4},
    }


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)  # /v1/models/{model:path} -> /v1/models/x


def _websocket_answer(base_url: str, path: str) -> bytes:
    """The raw answer to a websocket handshake without a key: its status line, and the first
    messages if the server accepts it (uvicorn accepts only with a websocket library installed;
    .venvs/sglang has none, so there it is served as plain HTTP)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    nonce = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request.encode())
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except TimeoutError:
            pass  # an open socket that sent nothing more
    return answer


@pytest.fixture(scope="module")
def sglang_server(tmp_path_factory):
    if machine.sglang_program() is None:
        pytest.fail("SGLang is not installed: run `bash ci/setup.sh sglang`")
    recipes = load_recipes()
    work = tmp_path_factory.mktemp("sglang-key")
    routes_file = work / "routes.json"
    # The cookbook's CPU launch plus any router-worker flag it lacks; the probe's folder goes first
    # on its PYTHONPATH (its sitecustomize runs the stand-ins' own one, then adds the route dump).
    plan = plan_launch("instruct", "sglang-cpu", port=30000)
    worker_flags = [line.split() for line in recipes.scale_out.sglang_worker_flags]
    extra_args = [t for flag in worker_flags if flag[0] not in plan.argv for t in flag]
    assert "--enable-metrics" in [*plan.argv, *extra_args]
    server = Server(
        "instruct",
        "sglang-cpu",
        progress=False,
        log_dir=work / "logs",
        startup_timeout_s=900,  # a loaded 2-core machine; it takes about 40 s alone
        extra_args=tuple(extra_args),
        env={
            "PYTHONPATH": os.pathsep.join([str(SITE_DIR), plan.env["PYTHONPATH"]]),
            "COOKBOOK_TEST_ROUTES_FILE": str(routes_file),
        },
    )
    try:
        server.start()
        # Ready means /v1/models answers; SGLang's own warm-up request comes after, and until it
        # is done /health and /ready say 503.
        deadline = time.monotonic() + 300
        while httpx.get(f"{server.base_url}/health", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, server.log_path.read_text()[-3000:]
            time.sleep(1)
        yield server, json.loads(routes_file.read_text())
    finally:
        server.stop()


def test_only_the_datas_open_paths_answer_without_the_key(sglang_server):
    server, routes = sglang_server
    open_paths = set(load_recipes().engines.sglang.key_leaves_open)
    methods: dict[str, set[str]] = {}
    mounts = set()
    for route in routes:
        if "WebSocket" in route["kind"]:
            continue
        if route["kind"] == "Mount":  # a mount takes whatever it serves
            mounts.add(route["path"])
        methods.setdefault(route["path"], set()).update(route["methods"] or ["GET", "POST"])
    # The route table was read (the generating paths are among those tried).
    assert len(methods) > 50 and set(_generation_requests("m")) <= set(methods), methods
    tried, answered, options = 0, set(), []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for path, path_methods in methods.items():
            urls = [_concrete(path)] + ([path.rstrip("/") + "/"] if path in mounts else [])
            for url in urls:
                for method in [*sorted(path_methods), "OPTIONS"]:
                    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
                        status = client.request(method, url, headers=headers, json={}).status_code
                        tried += 1
                        if method == "OPTIONS":
                            options.append((url, bool(headers), status))
                        elif status not in REFUSED:
                            answered.add((path, method, bool(headers), status))
                # A browser's CORS preflight gets SGLang's CORS middleware's answer, no endpoint's.
                preflight = client.options(
                    url,
                    headers={"Origin": "http://a.test", "Access-Control-Request-Method": "POST"},
                )
                assert (preflight.status_code, preflight.content) == (200, b"OK"), url
    # Exactly the data's open paths answer without the key (GET, with or without a wrong one).
    assert {a[0] for a in answered} == open_paths, f"{tried} requests: {sorted(answered)}"
    for path in open_paths:
        assert {(a[1], a[2], a[3]) for a in answered if a[0] == path} >= {
            ("GET", False, 200),
            ("GET", True, 200),
        }, path
    # OPTIONS passes SGLang's key check on every path; no route but a mount serves it.
    for url, wrong_key, status in options:
        assert status == (200 if url.rstrip("/") in mounts else 405), (url, wrong_key, status)
    assert mounts <= open_paths  # the /metrics mount, which OPTIONS reaches, is an open path


def test_no_path_generates_text_without_the_key(sglang_server):
    server, routes = sglang_server
    key = {"Authorization": f"Bearer {server.api_key}"}
    registered = {r["path"] for r in routes}
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        for path, body in _generation_requests(server.model).items():
            assert path in registered, path
            for headers in ({}, {"Authorization": "Bearer wrong-key"}):
                answer = client.post(path, json=body, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text[:300])
            answer = client.post(path, json=body, headers=key)  # the same request, with the key
            assert answer.status_code == 200 and answer.content, (path, answer.text[:300])
        # The open paths hold no request's text: health checks are empty, /metrics is counts.
        for path in load_recipes().engines.sglang.key_leaves_open:
            answer = client.get(path)
            assert answer.status_code == 200 and PROMPT not in answer.text, path
            if path.startswith("/metrics"):
                assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
                samples = [line for line in answer.text.splitlines() if line[:1] not in ("#", "")]
                sample = re.compile(r"[a-zA-Z_:][\w:]*(\{.*\})? \S+( \S+)?")
                assert samples and [s for s in samples if not sample.fullmatch(s)] == []
            else:
                assert answer.content == b"", path


def test_websockets_open_no_session_without_the_key(sglang_server):
    server, routes = sglang_server
    websockets = [r["path"] for r in routes if "WebSocket" in r["kind"]]
    assert websockets == ["/v1/realtime"]  # OpenAI's realtime transcription: speech models only
    for path in websockets:
        answer = _websocket_answer(server.base_url, path)
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 "), answer
        if b" 101 " in status:  # a websocket library is installed: SGLang's key check skips it
            assert b'"type":"error"' in answer and b'"code":"not_supported"' in answer, answer
        else:
            assert status.split(b" ")[1] in (b"401", b"403"), answer
