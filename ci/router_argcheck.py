"""Parse the cookbook's scale-out commands with sglang-router's and SGLang's own parsers
(run inside .venvs/sglang, which holds both at the cookbook's pins).

Reads a JSON list of {"id", "form", "command"} on stdin; form is "one_command" (the router's
`launch_server --dp-size N`) or "router" (`launch_router`). Writes a JSON list of results.

For the one-command form, `sglang_router.launch_server.main()` itself runs: its own parser
(SGLang's ServerArgs plus the router's --router- options), `ServerArgs.from_cli_args` and
`RouterArgs.from_cli_args`. Only its two side effects are replaced, starting worker processes
and the router, by recorders of what they were handed (and the process start method it sets).
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
import types

from sglang_argcheck import ENV_ASSIGN  # this folder is on sys.path when run as a script

PROGRAMS = {
    "one_command": ["python", "-m", "sglang_router.launch_server"],
    "router": ["python", "-m", "sglang_router.launch_router"],
}


def args_of(item: dict) -> list[str]:
    tokens = shlex.split(item["command"].replace("\\\n", " "))
    while tokens and ENV_ASSIGN.match(tokens[0]):  # the cell's own env lines (VL cells)
        tokens.pop(0)
    program = PROGRAMS[item["form"]]
    if tokens[: len(program)] != program:
        raise ValueError(f"not a {item['form']} command: starts with {' '.join(tokens[:3])!r}")
    return tokens[len(program) :]


def parse_one_command(args: list[str]) -> dict:
    import sglang_router.launch_server as launch_server

    seen: dict = {"workers": []}

    def start_worker(server_args, port, dp_rank):
        seen["workers"].append({"port": port, "dp_rank": dp_rank, "host": server_args.host})

    # main() sets the start method for the worker processes it would fork: once per process.
    launch_server.mp = types.SimpleNamespace(set_start_method=lambda method: None)
    launch_server.find_available_ports = lambda base, count: list(range(base, base + count))
    launch_server.launch_server_process = start_worker
    launch_server.launch_router = lambda router_args: seen.update(router=router_args)
    captured = {}
    real_from_cli = launch_server.ServerArgs.from_cli_args

    def from_cli(parsed):
        captured["server"] = real_from_cli(parsed)
        return captured["server"]

    launch_server.ServerArgs.from_cli_args = staticmethod(from_cli)
    sys.argv = ["launch_server", *args]
    launch_server.main()
    server, router = captured["server"], seen["router"]
    return {
        "server": {
            "model_path": server.model_path,
            "tp_size": server.tp_size,
            "dp_size": server.dp_size,
            "tool_call_parser": server.tool_call_parser,
            "reasoning_parser": server.reasoning_parser,
            "attention_backend": server.attention_backend,
            "host": server.host,
            "port": server.port,
        },
        "workers": seen["workers"],
        "router": {"policy": router.policy, "worker_urls": router.worker_urls,
                   "host": router.host, "port": router.port},
    }  # fmt: skip


def parse_router(args: list[str]) -> dict:
    from sglang_router.launch_router import parse_router_args

    router = parse_router_args(args)
    return {
        "router": {"policy": router.policy, "worker_urls": router.worker_urls,
                   "host": router.host, "port": router.port,
                   "service_discovery": router.service_discovery, "selector": router.selector,
                   "service_discovery_port": router.service_discovery_port},
    }  # fmt: skip


def check(item: dict) -> dict:
    result = {"id": item["id"], "ok": False, "error": None, "parsed": {}}
    stderr = io.StringIO()
    try:
        args = args_of(item)
        with contextlib.redirect_stderr(stderr):
            parse = parse_one_command if item["form"] == "one_command" else parse_router
            result["parsed"] = parse(args)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if "error:" in line]
        result["error"] = lines[-1] if lines else stderr.getvalue().strip()[-500:]
        return result
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["ok"] = True
    return result


def main() -> int:
    from sglang_router.version import __version__

    results = [check(item) for item in json.load(sys.stdin)]
    json.dump({"router_version": __version__, "results": results}, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
