"""The launch's API key on every path of a vLLM server but its health check.

vLLM's own check (--api-key / VLLM_API_KEY) guards only paths under /v1, /v2, /inference and
/cohere: /invocations generates text without a key, and /tokenize, /metrics, /docs answer too.
The cookbook loads this module into the engine with `--middleware cookbook_key_guard.RequireKey`
(its directory on the engine's PYTHONPATH), so it imports nothing but the standard library.

The key is vLLM's own VLLM_API_KEY; COOKBOOK_OPEN_PATHS lists, comma-separated, the exact paths
left open (data/recipes.yaml: engines.key_guard.open_paths). Without a key it refuses to start:
a guard that lets everything through would be worse than none, as it looks like one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

KEY_ENV = "VLLM_API_KEY"
OPEN_PATHS_ENV = "COOKBOOK_OPEN_PATHS"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class RequireKey:
    """Pure ASGI middleware: `Authorization: Bearer <key>` on every HTTP request and websocket
    except the open paths (exact match), whatever the method."""

    def __init__(self, app, key: str | None = None, open_paths: str | None = None) -> None:
        key = key if key is not None else os.environ.get(KEY_ENV, "")
        if not key:
            raise RuntimeError(f"cookbook_key_guard: no API key in {KEY_ENV}; refusing to serve")
        self.app = app
        self._key = _digest(key)
        opened = open_paths if open_paths is not None else os.environ.get(OPEN_PATHS_ENV, "")
        self.open_paths = frozenset(p for p in opened.split(",") if p)

    def _authorised(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                # As vLLM's own check reads it: the scheme in any case, the key exactly as sent.
                return scheme.lower() == "bearer" and hmac.compare_digest(_digest(token), self._key)
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path in self.open_paths or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "Unauthorized: this server requires its API key"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
