"""Test-only vLLM --middleware (loaded inside the engine): writes every route the running app
registers to $COOKBOOK_TEST_ROUTES_FILE, so that the key test covers what the engine serves
rather than a list written here. It answers nothing itself."""

from __future__ import annotations

import json
import os


class DumpRoutes:
    def __init__(self, app) -> None:
        self.app = app
        self.written = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not self.written and "app" in scope:
            routes = []
            for route in scope["app"].routes:  # Starlette sets scope["app"] to the application
                kind = type(route).__name__
                methods = sorted(getattr(route, "methods", None) or [])
                routes.append({"path": route.path, "kind": kind, "methods": methods})
            with open(os.environ["COOKBOOK_TEST_ROUTES_FILE"], "w") as fh:
                json.dump(routes, fh)
            self.written = True
        await self.app(scope, receive, send)
