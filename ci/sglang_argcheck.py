"""Parse launch commands with SGLang's own argument parser (run inside .venvs/sglang).

Reads a JSON list of {"id": ..., "command": "<command text as a user pastes it>"} on stdin and
writes a JSON list of results on stdout. The command text is taken apart here, independently of
the cookbook's generator: env assignments, an optional `docker run ... IMAGE` wrapper, then
`sglang serve` or `python3 -m sglang.launch_server` and its arguments, which go to
`sglang.srt.server_args.prepare_server_args`. Env var names starting with SGLANG_ must be ones
SGLang declares in `sglang.srt.environ.envs`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sys

ENV_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
DOCKER_VALUE_OPTIONS = {"--env", "-e", "-p", "--publish", "-v", "--volume", "--shm-size", "--gpus",
                        "--name", "--network", "--ipc"}  # fmt: skip
PROGRAMS = (["sglang", "serve"], ["python3", "-m", "sglang.launch_server"],
            ["python", "-m", "sglang.launch_server"])  # fmt: skip
# Env vars a command may carry that are not SGLang's own.
FOREIGN_ENV = {"HF_TOKEN", "CUDA_VISIBLE_DEVICES"}
REPORTED_FIELDS = ("model_path", "tp_size", "tool_call_parser", "reasoning_parser",
                   "attention_backend", "mm_attention_backend", "mem_fraction_static", "host",
                   "port", "trust_remote_code", "dtype", "disable_radix_cache",
                   "served_model_name")  # fmt: skip


def split_command(text: str) -> tuple[dict[str, str], list[str]]:
    """(env, sglang args) of a command as pasted into a shell."""
    tokens = shlex.split(text.replace("\\\n", " "))
    env: dict[str, str] = {}
    while tokens and ENV_ASSIGN.match(tokens[0]):
        name, value = ENV_ASSIGN.match(tokens.pop(0)).groups()
        env[name] = value
    if tokens[:2] == ["docker", "run"]:
        tokens = tokens[2:]
        while tokens and tokens[0].startswith("-"):
            option = tokens.pop(0)
            if option in DOCKER_VALUE_OPTIONS:
                value = tokens.pop(0)
                if option in ("--env", "-e"):
                    name, _, val = value.partition("=")
                    env[name] = val
        if not tokens:
            raise ValueError("docker run without an image")
        tokens.pop(0)  # the image
    for program in PROGRAMS:
        if tokens[: len(program)] == program:
            return env, tokens[len(program) :]
    raise ValueError(f"not an SGLang launch: starts with {' '.join(tokens[:3])!r}")


def exact_option_strings() -> dict[str, str]:
    """Every option string SGLang's parser declares -> its first (canonical) spelling."""
    import argparse

    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return {o: a.option_strings[0] for o, a in parser._option_string_actions.items()}


def check(item: dict, prepare_server_args, envs, options: dict[str, str]) -> dict:
    result = {
        "id": item["id"],
        "ok": False,
        "error": None,
        "env": {},
        "parsed": {},
        "abbreviations": {},
    }
    try:
        env, args = split_command(item["command"])
    except (ValueError, IndexError) as exc:
        result["error"] = f"could not take the command apart: {exc}"
        return result
    result["env"] = env
    unknown = [n for n in env if n not in FOREIGN_ENV and not hasattr(envs, n)]
    # argparse also accepts unambiguous prefixes; report them so callers can decide.
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    result["abbreviations"] = {
        f: sorted({options[o] for o in options if o.startswith(f)})
        for f in flags
        if f not in options
    }
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = prepare_server_args(args)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if "error:" in line]
        result["error"] = lines[-1] if lines else stderr.getvalue().strip()[-500:]
        return result
    except Exception as exc:  # SGLang's own validation (__post_init__) rejected it
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["parsed"] = {f: getattr(parsed, f, None) for f in REPORTED_FIELDS}
    result["parsed"]["api_key_set"] = bool(getattr(parsed, "api_key", None))  # never the key
    if unknown:
        result["error"] = f"env vars not declared by SGLang: {', '.join(unknown)}"
        return result
    result["ok"] = True
    return result


def main() -> int:
    items = json.load(sys.stdin)
    from sglang.srt.environ import envs
    from sglang.srt.server_args import prepare_server_args
    from sglang.version import __version__

    options = exact_option_strings()
    results = [check(item, prepare_server_args, envs, options) for item in items]
    json.dump({"sglang_version": __version__, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
