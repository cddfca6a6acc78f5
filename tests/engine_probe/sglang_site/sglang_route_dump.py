"""Test-only ASGI middleware (added to SGLang's app by sitecustomize.py here): writes every route
the running app registers to $COOKBOOK_TEST_ROUTES_FILE, on the first HTTP request that reaches it.
FastAPI 0.165 keeps an included router (SGLang's v1_loads and elastic_ep) as one entry of
app.routes; fastapi.routing.iter_route_contexts lists the routes inside it with their full paths.
It answers nothing itself."""

from __future__ import annotations

import json
import os


def _flat(routes):
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: app.routes is already flat
        return list(routes)
    return list(iter_route_contexts(routes))


class DumpRoutes:
    def __init__(self, app) -> None:
        self.app = app
        self.written = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not self.written and "app" in scope:
            routes = []
            for route in _flat(scope["app"].routes):  # Starlette sets scope["app"] to the app
                original = getattr(route, "original_route", route)
                routes.append(
                    {
                        "path": route.path,
                        "kind": type(original).__name__,
                        "methods": sorted(getattr(route, "methods", None) or []),
                    }
                )
            with open(os.environ["COOKBOOK_TEST_ROUTES_FILE"], "w") as fh:
                json.dump(routes, fh)
            self.written = True
        await self.app(scope, receive, send)
