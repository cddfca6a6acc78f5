"""Parse vLLM launch commands with vLLM's own argument parser (run inside .venvs/cpu-engine).

Reads a JSON list of {"id": ..., "argv": [...]} (the arguments after the program) on stdin and
writes a JSON list of results on stdout. vLLM's parser takes any parser name and checks it only
when the server starts, so the tool-call and reasoning parser names are also looked up in vLLM's
registries here.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> int:
    items = json.load(sys.stdin)
    from vllm import __version__
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    tool_parsers = set(ToolParserManager.list_registered())
    reasoning_parsers = set(ReasoningParserManager.list_registered())
    results = []
    for item in items:
        result = {"id": item["id"], "ok": False, "error": None, "parsed": {}}
        parser = make_arg_parser(FlexibleArgumentParser())
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(item["argv"])
                validate_parsed_serve_args(args)
        except SystemExit:
            lines = [line for line in stderr.getvalue().splitlines() if "error" in line.lower()]
            result["error"] = lines[-1] if lines else stderr.getvalue().strip()[-500:]
            results.append(result)
            continue
        except Exception as exc:  # vLLM's own validation
            result["error"] = f"{type(exc).__name__}: {exc}"
            results.append(result)
            continue
        fields = (
            "model",
            "served_model_name",
            "host",
            "port",
            "tool_call_parser",
            "reasoning_parser",
            "enable_auto_tool_choice",
            "max_model_len",
            "tensor_parallel_size",
            "optimization_level",
        )
        result["parsed"] = {f: getattr(args, f, None) for f in fields}
        if args.tool_call_parser and args.tool_call_parser not in tool_parsers:
            result["error"] = (
                f"tool-call parser {args.tool_call_parser!r} is not registered in vLLM"
            )
        elif args.reasoning_parser and args.reasoning_parser not in reasoning_parsers:
            result["error"] = (
                f"reasoning parser {args.reasoning_parser!r} is not registered in vLLM"
            )
        else:
            result["ok"] = True
        results.append(result)
    json.dump({"vllm_version": __version__, "results": results}, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
