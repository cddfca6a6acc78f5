"""The `cookbook` command line: the verified matrix, commands, and a machine check."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from cookbook import commands, machine
from cookbook.errors import BadInputError, CookbookError
from cookbook.recipes import Recipes, is_host, is_port, load_recipes
from cookbook_tools import doctor


class UsageError(BadInputError):
    """Bad command-line input, its message already in the CLI's words: one line, exit status 2."""

    def cli_message(self, command: str | None) -> str:
        return str(self)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + error
        raise UsageError(f"{self.prog}: error: {message}")


def _matrix(args: argparse.Namespace) -> int:
    recipes = load_recipes()
    hws = list(recipes.hardware) if args.all else recipes.verified_hardware
    rows, unsupported = [], []
    for hw in hws:
        if not recipes.hardware[hw].supported:
            unsupported.append({"hw": hw, "badge": "Unsupported",
                                "reason": recipes.hardware[hw].unsupported,
                                "evidence": recipes.hardware[hw].evidence})  # fmt: skip
            continue
        for variant in recipes.variants:
            spec = commands.launch_spec(hw, variant)
            cell = recipes.deploy.cells.get(hw, {}).get(variant)
            rows.append({
                "hw": hw,
                "variant": variant,
                "model": spec.model,
                "verified": spec.verified,
                "badge": "Verified" if spec.verified else "Not Verified",
                "derived_from": spec.derived_from,
                "attention_backend": commands.attention_backend(hw, spec.flags, recipes),
                "env": list(spec.env),
                "cell_flags": cell if cell is not None else None,
                "notes": list(spec.notes),
                "command": commands.render(spec),
            })  # fmt: skip
    lam = recipes.lambda_8b_a1b
    extra = {
        "id": "lambda-8b-a1b",
        "source": recipes.sources[lam.source].title,
        "model": recipes.models[lam.model].hf_id,
        "served_model_name": lam.served_model_name,
        "port": lam.port,
        "benchmarked_on": lam.benchmarked_on,
        "commands": {engine: commands.render_lambda(engine) for engine in commands.LAMBDA_ENGINES},
    }
    if args.json:
        print(json.dumps({"cells": rows, "unsupported": unsupported, "recipes": [extra]},
                         indent=2))  # fmt: skip
        return 0
    vision_env = list(recipes.deploy.vision_env)
    print(f"{'HW':<6} {'VARIANT':<9} {'MODEL':<32} {'BADGE':<13} CELL FLAGS")
    for r in rows:
        flags = " ".join(r["cell_flags"] or []) or (
            f"(derived from {r['derived_from']}; attention {r['attention_backend']})"
        )
        env = (
            ""
            if not r["env"]
            else (" +vision env" if r["env"] == vision_env else " +env " + " ".join(r["env"]))
        )
        print(f"{r['hw']:<6} {r['variant']:<9} {r['model']:<32} {r['badge']:<13} {flags}{env}")
    for u in unsupported:
        print(f"{u['hw']:<6} {'(all)':<9} {'-':<32} {'Unsupported':<13} {u['reason']}")
    verified = sum(r["verified"] for r in rows)
    print(
        f"\n{verified} verified cells ({len(recipes.verified_hardware)} GPUs x "
        f"{len(recipes.variants)} variants); every cell: {recipes.deploy.quant}, TP=1, single node."
    )
    print(f"\nRecipe {extra['id']}: {extra['model']} served as {extra['served_model_name']} "
          f"on port "
          f"{extra['port']}, SGLang and vLLM, benchmarked on {', '.join(lam.benchmarked_on)} "
          f"(source: {extra['source']}).")  # fmt: skip
    return 0


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The flags among `names` that were given (options default to None or False here)."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False)]


def _conflict(message: str) -> UsageError:
    return UsageError(f"cookbook command: error: {message}")


def _command(args: argparse.Namespace) -> int:
    if args.recipe:
        # The guide's command is printed as the guide writes it: nothing of it can be changed.
        ignored = _given(args, ("hw", "variant", "docker", "tp", "host", "port", "hf_token_env"))
        if ignored:
            raise _conflict(
                f"--recipe prints the Lambda guide's command as written; {', '.join(ignored)} "
                "cannot change it (it takes --engine, --curl and --json only)"
            )
        engine = args.engine or "sglang"
        # --curl: the guide's own verify step (GET /v1/models), the same for both engines.
        recipe = load_recipes().lambda_8b_a1b
        text = recipe.verify if args.curl else commands.render_lambda(engine)
        print(json.dumps({"recipe": args.recipe, "engine": engine, "command": text}, indent=2)
              if args.json else text)  # fmt: skip
        return 0
    if args.engine is not None:
        raise _conflict(
            "--engine chooses the engine of --recipe lambda-8b-a1b; the Deploy cells are "
            "SGLang commands (drop --engine, or add --recipe lambda-8b-a1b)"
        )
    if not (args.hw and args.variant):
        raise _conflict("give --hw and --variant (or --recipe lambda-8b-a1b)")
    # First: a token given where its variable's name belongs is named as such (never echoed).
    values = commands.Placeholders.resolve(
        {"HOST_IP": args.host, "PORT": args.port, "HF_TOKEN": args.hf_token_env}
    )
    if args.curl and args.json:
        raise _conflict("--curl and --json: pick one (the JSON carries the cURL check as 'curl')")
    unused = ("docker", "host", "tp", "parser", "hf_token_env")
    unused_by_curl = _given(args, unused) if args.curl else []
    if unused_by_curl:
        raise _conflict(
            f"--curl prints the cURL check, which {', '.join(unused_by_curl)} does not change "
            "(it connects to localhost and --port); drop one or the other"
        )
    if args.hf_token_env and not args.docker:
        raise _conflict(
            "--hf-token-env names the token variable `docker run` passes in; it needs --docker "
            "(a bare command reads HF_TOKEN from your environment itself)"
        )
    result = commands.playground(
        args.hw, args.variant, tp=args.tp, docker=args.docker, values=values,
        parsers=tuple(args.parser or ()),
    )  # fmt: skip
    spec = result.spec
    curl = commands.render_curl(spec, values)
    if args.json:
        env, argv = commands.server_argv(spec, values)
        print(json.dumps({
            "hw": spec.hw, "variant": spec.variant, "model": spec.model,
            "verified": spec.verified, "badge": "Verified" if spec.verified else "Not Verified",
            "derived_from": spec.derived_from, "notes": list(spec.notes),
            "docker": args.docker, "command": result.command, "curl": curl,
            "env": env, "argv": argv,
            "diff": [{"tag": d.tag, "line": d.text} for d in result.diff if d.tag != " "],
            "submit_url": result.submit_url,
        }, indent=2))  # fmt: skip
        return 0
    print(curl if args.curl else result.command)
    if not spec.verified:
        # On stderr so that stdout stays a pasteable command.
        why = " ".join(spec.notes) or "the overrides changed the verified command."
        print(f"# Not Verified: {why}",
              file=sys.stderr)  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cookbook.server import Server

    if args.hw and args.engine in ("sglang-cpu", "vllm-cpu", "vllm"):
        raise UsageError(
            f"cookbook serve: error: --hw picks the SGLang recipe; the {args.engine} engine does "
            "not use it (drop --hw, or use --engine sglang)"
        )
    if args.model is not None and not args.model.strip():
        raise UsageError(
            "cookbook serve: error: --model is empty: give a model directory or hub id"
        )
    if not is_host(args.host) or args.host.startswith("["):
        raise UsageError(
            f"cookbook serve: error: --host {args.host!r} is not a host name or IP address "
            "(e.g. 127.0.0.1, the default, or 0.0.0.0 for every interface)"
        )
    try:
        server = Server(args.variant, engine=args.engine, model=args.model, hw=args.hw,
                        host=args.host, port=args.port)  # fmt: skip
        server.start()
    except KeyboardInterrupt:  # start() has already stopped what it launched
        print("\ncookbook serve: interrupted during start-up; the engine was stopped",
              file=sys.stderr)  # fmt: skip
        return 130
    try:
        print(f"serving {server.model} ({server.engine}) at {server.base_url}/v1")
        for note in server.plan.notes:
            print(f"note: {note}")
        print(f"log: {server.log_path}")
        if args.show_key:
            print(f"api key: {server.api_key}")
        else:
            print("api key: a fresh one for this launch; rerun with --show-key to print it")
        print("Ctrl-C stops the server.", flush=True)
        while server.alive:
            time.sleep(0.5)
        server.raise_if_dead()
    except KeyboardInterrupt:
        print("\nstopping...", file=sys.stderr)
    finally:
        server.stop()
    return 0


def _hangup_is_an_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # a closed terminal stops the run as Ctrl-C does: summary kept


def _run(args: argparse.Namespace) -> int:
    from cookbook_tools import runner

    signal.signal(signal.SIGHUP, _hangup_is_an_interrupt)

    if not args.out.strip():  # Path("") would be "." (the current folder)
        raise UsageError("cookbook run: error: --out is empty: give a folder for the notebooks")
    notebooks = runner.select(args.notebooks)
    if not notebooks:
        raise UsageError("cookbook run: error: no notebooks found in notebooks/")
    if args.variant is not None:
        load_recipes().model(args.variant)  # an unknown one fails here, not in every notebook
    started = time.monotonic()
    runs = runner.run(
        notebooks,
        Path(args.out),
        engine=args.engine,
        variant=args.variant,
        cell_timeout_s=args.cell_timeout,
        fresh_servers=args.fresh_servers,
    )
    print(f"\n{'NOTEBOOK':<24} {'STATUS':<7} {'SECONDS':>7} {'START-UP':>8}  ENGINE  MODEL")
    for r in runs:
        startup = f"{r.startup_s:>8.1f}" if r.startup_s is not None else f"{'-':>8}"
        print(
            f"{r.notebook:<24} {r.status:<7} {r.seconds:>7.1f} {startup}  "
            f"{r.engine or '-':<6}  {r.model or '-'}"
        )
    passed = sum(r.status == "passed" for r in runs)
    startups = sum(r.startup_s or 0 for r in runs)
    print(f"\n{passed} passed, {len(runs) - passed} failed in {time.monotonic() - started:.0f} s "
          f"({startups:.0f} s of it engine start-up); "
          f"executed notebooks and summary.json in {args.out}")  # fmt: skip
    return 0 if passed == len(runs) else 1


def _bench(args: argparse.Namespace) -> int:
    from cookbook import bench

    if args.scale is not None and not args.preset:
        raise UsageError(
            "cookbook bench: error: --scale picks a version of --preset; without a preset it "
            "changes nothing (add --preset, or drop --scale)"
        )
    settings = bench.preset(args.preset, args.scale or "gpu") if args.preset else {}
    if args.out:
        bench.check_out_path(args.out)  # before the run: a bad --out must not lose results
    given = {
        "endpoint": args.endpoint, "input_len": args.input_len, "output_len": args.output_len,
        "num_prompts": args.num_prompts, "max_concurrency": args.max_concurrency,
    }  # fmt: skip
    settings.update({k: v for k, v in given.items() if v is not None})
    slo = {}
    for item in args.goodput or []:
        name, _, value = item.partition(":")
        if name in slo:
            raise UsageError(
                f"cookbook bench: error: --goodput {name}:... is given twice; give each SLO once"
            )
        try:
            slo[name] = float(value)
        except ValueError:
            raise UsageError(
                f"cookbook bench: error: --goodput {item!r}: expected NAME:MS, e.g. ttft:500"
            ) from None
    config = bench.BenchConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        request_rate=math.inf if args.request_rate is None else args.request_rate,
        burstiness=args.burstiness,
        range_ratio=args.range_ratio,
        range_convention=args.range_convention,
        warmup=args.warmup,
        ignore_eos=not args.no_ignore_eos,
        seed=args.seed,
        request_timeout_s=args.request_timeout,
        run_timeout_s=args.run_timeout,
        goodput_slo_ms=slo,
        preset=args.preset,
        **settings,
    )
    run = bench.run_benchmark(config, progress=not args.no_progress, log=print)
    result = run.result()
    print()
    print(bench.summary_table({"this run": {**result, "failed": run.metrics.failed}}))
    if run.interrupted:
        print(f"\nended early: {run.interrupted}; the finished requests are kept")
    if args.out:
        try:
            path, lines = run.save(args.out)
        except (OSError, bench.BenchError) as exc:  # it changed during the run
            print(f"cookbook bench: error: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
        print(f"\nwrote {path} and {lines}")
    # A run with any failed request is no clean record: its numbers leave those requests out.
    clean = run.metrics.completed and not run.metrics.failed and not run.interrupted
    return 0 if clean else 1


def _docs(args: argparse.Namespace) -> int:
    from cookbook_tools import docs

    site = docs.build(Path(args.run), Path(args.out))
    print(f"open {site / 'index.html'}, or serve it: python -m http.server -d {site}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from cookbook_tools import docs

    print(docs.run_summary_markdown(Path(args.run)))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    report = doctor.run()
    print(json.dumps(report.to_json(), indent=2) if args.json else doctor.format_report(report))
    return 0


def _upstream_check(args: argparse.Namespace) -> int:
    try:  # its JavaScript parser comes with the dev extra (ci/setup.sh main), not with the kernel
        from cookbook_tools import upstream_check
    except ModuleNotFoundError as exc:
        raise CookbookError(
            f"{exc.name} is not installed: it comes with the dev tools (bash ci/setup.sh main, "
            "or pip install -e '.[dev]')"
        ) from None
    return upstream_check.main(args.source, as_json=args.json)


def _port(text: str) -> int:
    if not is_port(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 1-65535")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # zero or less would mean "no limit" to some and an error to others
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _add_command(sub: argparse._SubParsersAction, recipes: Recipes) -> None:
    p = sub.add_parser("command", help="the launch command for a GPU and a model")
    p.add_argument("--hw", help=f"hardware id: {', '.join(recipes.hardware)}")
    p.add_argument("--variant", help=f"model: {', '.join(recipes.models)}")
    p.add_argument("--docker", action="store_true", help="wrap in `docker run` (the page's image)")
    p.add_argument("--tp", type=int, help="Playground TP override (changes the verified command)")
    toggles = sorted({t for page in recipes.pages.values() for t in page.parser_toggles})
    p.add_argument("--parser", action="append", metavar="TOGGLE",
                   help=f"Playground parser toggle, where the model's page offers one: "
                   f"{', '.join(toggles)} (changes the verified command)")  # fmt: skip
    p.add_argument("--host", help="HOST_IP placeholder (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="PORT placeholder (default 30000)")
    p.add_argument("--hf-token-env", help="name of the variable holding your HF token (Docker)")
    p.add_argument("--curl", action="store_true", help="print the cURL check instead")
    p.add_argument("--recipe", choices=["lambda-8b-a1b"], help="the Lambda guide's recipe instead")
    p.add_argument("--engine", choices=commands.LAMBDA_ENGINES,
                   help="engine of --recipe (default sglang)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_command)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark a running server (streaming, vLLM-style metrics)")
    p.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:30000/v1")
    p.add_argument("--api-key", help="its key (default: $OPENAI_API_KEY)")
    p.add_argument("--model", required=True, help="the served model name")
    p.add_argument("--preset", help="a workload of data/benchmarks.yaml (flags below override it)")
    p.add_argument("--scale", choices=["gpu", "cpu"],
                   help="with --preset: gpu (default) or cpu, its scaled-down version")  # fmt: skip
    p.add_argument("--endpoint", choices=["completions", "chat"])
    p.add_argument("--input-len", type=int, help="prompt tokens (exact)")
    p.add_argument("--output-len", type=int, help="output tokens (ignore_eos on by default)")
    p.add_argument("--num-prompts", type=int)
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--request-rate", type=float, help="requests/s (default: all at once)")
    p.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson arrivals")
    p.add_argument("--range-ratio", type=float, default=0.0)
    p.add_argument("--range-convention", choices=["vllm", "sglang"], default="vllm",
                   help="vllm: U[L(1-r), L(1+r)]; sglang: U[L*r, L]")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="warmup requests (not measured)")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at EOS")
    p.add_argument(
        "--goodput",
        nargs="+",
        action="extend",
        metavar="NAME:MS",
        help="SLOs, e.g. ttft:500 tpot:50",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-timeout", type=_positive_seconds, default=600.0,
                   help="seconds per request")  # fmt: skip
    p.add_argument(
        "--run-timeout", type=_positive_seconds,
        help="seconds for the whole run: prompt building, warm-up, arrivals and requests",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", help="result JSON (a .requests.jsonl is written beside it)")
    p.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    recipes = load_recipes()
    parser = _Parser(
        prog="cookbook", description="LFM2.5 on SGLang: verified commands and notebooks."
    )
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    p = sub.add_parser("matrix", help="the verified cells with their badge, and the Lambda recipe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--all", action="store_true", help="also GPUs outside the matrix (derived recipes)"
    )
    p.set_defaults(func=_matrix)

    _add_command(sub, recipes)

    p = sub.add_parser("run", help="execute notebooks (all by default) and write summary.json")
    p.add_argument("notebooks", nargs="*", help="numbers or names, e.g. 01 03_tool_calling")
    p.add_argument("--engine", default="auto", choices=list(machine.ENGINES))
    p.add_argument("--variant", help="override each notebook's default variant")
    p.add_argument("--out", default="runs/latest", help="folder for executed notebooks")
    p.add_argument("--cell-timeout", type=_positive_seconds, default=900, help="seconds per cell")
    p.add_argument(
        "--fresh-servers",
        action="store_true",
        help="every notebook launches its own server (default on the CPU: notebooks "
        "asking for the same model share one that cookbook run starts)",
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("serve", help="run one server in the foreground until Ctrl-C")
    p.add_argument("--variant", default="instruct", help=f"model: {', '.join(recipes.models)}")
    p.add_argument("--engine", default="auto", choices=list(machine.ENGINES))
    p.add_argument("--model", help="a local model directory or hub id to serve instead")
    p.add_argument("--hw", help="hardware id for the sglang engine (default: detected)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port 1-65535 (default: a free one)")
    p.add_argument("--show-key", action="store_true", help="print this launch's API key")
    p.set_defaults(func=_serve)

    _add_bench(sub)

    p = sub.add_parser("docs", help="build the docs site from an executed run")
    p.add_argument("--run", default="runs/latest", help="the run's folder (with summary.json)")
    p.add_argument("--out", default="site", help="where the site goes")
    p.set_defaults(func=_docs)

    p = sub.add_parser("summary", help="a run's table and benchmark figures as Markdown")
    p.add_argument("--run", default="runs/latest", help="the run's folder (with summary.json)")
    p.set_defaults(func=_summary)

    p = sub.add_parser(
        "doctor", help="Python, packages, GPU, engines and free ports on this machine"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_doctor)

    p = sub.add_parser(
        "upstream-check", help="compare data/ with SGLang's own cookbook files (exit 1: differ)"
    )
    p.add_argument("--source", metavar="DIR_OR_URL",
                   help="a folder with the files, or a base URL the pages' paths are appended "
                   "to (default: sgl-project/sglang's main branch on GitHub)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the differences as a JSON list")
    p.set_defaults(func=_upstream_check)
    return parser


# Values that may start with "-" (an API key can): argparse would read "--api-key -xyz" as a
# missing value followed by an option, so the pair is joined as "--api-key=-xyz" first.
DASH_VALUES = ("--api-key",)


def join_dash_values(argv: list[str]) -> list[str]:
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in DASH_VALUES and rest and rest[0].startswith("-") and rest[0] != "--":
            arg = f"{arg}={rest.pop(0)}"
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        argv = join_dash_values(sys.argv[1:] if argv is None else list(argv))
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CookbookError as exc:  # every error the cookbook raises on purpose: one line
        print(exc.cli_message(getattr(args, "cmd", None)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ncookbook: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cookbook matrix | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
