"""Test-only start-up hook for an SGLang server (tests/test_sglang_key.py): this folder goes FIRST
on the launch's PYTHONPATH, ahead of the cookbook's stand-ins folder, whose own sitecustomize is
then run from here unchanged. With $COOKBOOK_TEST_ROUTES_FILE set, when SGLang's HTTP server module
loads, its app gets one more ASGI middleware, sglang_route_dump.DumpRoutes (here), which writes
every route the running app registers to that file: those of the import and those its start-up
adds (the /metrics mount of --enable-metrics). SGLang adds its own --api-key middleware later,
outside this one, so the dump sees only requests the key let through, and answers nothing."""

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HTTP_SERVER = "sglang.srt.entrypoints.http_server"


def _run_next_sitecustomize() -> None:
    """The sitecustomize this one hides (the stand-ins' one): the next on sys.path."""
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "sitecustomize.py"
        if candidate.parent != HERE and candidate.is_file():
            spec = importlib.util.spec_from_file_location("_cookbook_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


def _add_route_dump(module) -> None:
    from sglang_route_dump import DumpRoutes

    module.app.add_middleware(DumpRoutes)


_run_next_sitecustomize()
if os.environ.get("COOKBOOK_TEST_ROUTES_FILE"):
    import cookbook_cpu_hooks  # the stand-ins' folder follows this one on the path

    sys.meta_path.insert(0, cookbook_cpu_hooks.PatchOnLoad(HTTP_SERVER, _add_route_dump))
