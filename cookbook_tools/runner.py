"""`cookbook run`: execute the numbered notebooks with papermill and summarise what happened.

Each notebook has a `parameters` cell (ENGINE, VARIANT, SERVER, ...). The runner sets ENGINE and
VARIANT, names the file each notebook's `finish` writes its key results to (in its kernel's
environment: cookbook.results.RESULTS_ENV), keeps every executed notebook, and writes
DIR/summary.json: per notebook its status, seconds, engine, variant, model, the key results the
notebook recorded, and an error excerpt if it failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cookbook.errors import BadInputError
from cookbook.paths import NOTEBOOKS_DIR, REPO_ROOT
from cookbook.processes import NO_PROGRESS_BARS_ENV
from cookbook.results import RESULTS_ENV

DEFAULT_OUT = REPO_ROOT / "runs" / "latest"
CELL_TIMEOUT_S = 900
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")


class RunnerError(BadInputError, ValueError):
    """Bad input to the runner (unknown notebook, unwritable output folder)."""


def available() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(names: list[str] | None) -> list[Path]:
    """Notebooks by number (`01`), stem (`01_chat`) or path; all of them when none are named."""
    notebooks = available()
    if not names:
        return notebooks
    chosen = []
    for name in names:
        given = Path(name).expanduser()
        a_path = len(given.parts) > 1 or given.suffix  # not a number or stem: it must be ours
        if a_path and given.resolve() not in notebooks:
            raise RunnerError(
                f"{name!r} is not one of the cookbook's notebooks ({NOTEBOOKS_DIR}/NN_*.ipynb): "
                "`cookbook run` executes those only (papermill runs any other notebook)"
            )
        stem = Path(name).stem
        match = [nb for nb in notebooks if nb.stem == stem or nb.stem.split("_", 1)[0] == stem]
        if not match:
            valid = ", ".join(nb.stem for nb in notebooks)
            raise RunnerError(f"unknown notebook {name!r}; valid: {valid}")
        chosen += [nb for nb in match if nb not in chosen]
    return chosen


@dataclass
class NotebookRun:
    notebook: str
    status: str  # "passed" or "failed"
    seconds: float
    engine: str | None = None
    variant: str | None = None
    model: str | None = None
    startup_s: float | None = None  # the engine's launch-to-ready time within `seconds`
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    executed: str | None = None


def _error_excerpt(exc: BaseException, limit: int = 1500, tail_lines: int = 20) -> str:
    """The error's first line(s) and its last lines: a server's start failure ends with its log
    tail, which is where the cause is, so a long message keeps both ends."""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    text = f"{ename}: {evalue}"
    if len(text) > limit:
        tail = "\n".join(text.splitlines()[-tail_lines:])[-(limit // 2) :]
        head = text[: max(0, limit - len(tail) - 5)]
        text = f"{head}\n...\n{tail}"
    return _redact(text)


def _redact(text: str) -> str:
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, f"<{name}>")
    return text


def failure_details(result: NotebookRun, tail_lines: int = 8) -> str:
    """Where to look, under a failed notebook's one-line verdict: a server's log path and the
    last lines of its log (where the cause is), and the executed notebook."""
    lines = (result.error or "").splitlines()[1:]
    log = [line.strip() for line in lines if line.strip().startswith("Log:")]
    tail = [line for line in lines if line.startswith("    ")][-tail_lines:]
    out = [f"      {line}" for line in log] + [f"      {line.strip()}" for line in tail]
    out.append(f"      executed notebook: {result.executed}")
    return "\n".join(out)


@contextlib.contextmanager
def kernel_sockets():
    """Kernel-manager config for Unix sockets in a private folder (0700, short enough for the
    socket path limit) instead of TCP ports on 127.0.0.1: no port for other users to connect to,
    and no unencrypted-TCP warning from ipykernel in the run's output for every notebook."""
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="cookbook-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": f"{folder}/k"}})


def run_one(
    notebook: Path, out_dir: Path, parameters: dict[str, Any], cell_timeout_s: float
) -> NotebookRun:
    import papermill

    results_path = out_dir / f"{notebook.stem}.results.json"
    results_path.unlink(missing_ok=True)
    executed = out_dir / notebook.name
    started = time.monotonic()
    error = None
    previous = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(results_path)  # the kernel inherits it; `finish` writes there
    try:
        with kernel_sockets() as config:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters,
                cwd=str(NOTEBOOKS_DIR), kernel_name="python3", execution_timeout=cell_timeout_s,
                progress_bar=False, log_output=False, config=config,
            )  # fmt: skip
    except Exception as exc:  # papermill's execution error, a timeout, a dead kernel
        error = _error_excerpt(exc)
    finally:
        if previous is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = previous
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return NotebookRun(
        notebook=notebook.stem,
        status="failed" if error else "passed",
        seconds=round(time.monotonic() - started, 1),
        engine=results.pop("engine", parameters.get("ENGINE")),
        variant=results.pop("variant", parameters.get("VARIANT")),
        model=results.pop("model", None),
        startup_s=results.pop("startup_s", None),
        results=results,
        error=error,
        executed=str(executed),
    )


def launches_its_server(notebook: Path) -> bool:
    """Whether the notebook starts its server with `cookbook.launch` (cookbook.server.launch, and
    so can be handed one): 08 runs its own replicas, 09 launches from its panel."""
    return "server = cookbook.launch(VARIANT, ENGINE, **SERVER)" in notebook.read_text()


def default_parameters(notebook: Path) -> dict[str, Any]:
    """The notebook's parameters cell, as values (papermill reads the cell; literals only)."""
    import ast

    import papermill

    found = papermill.inspect_notebook(str(notebook))
    return {name: ast.literal_eval(p["default"]) for name, p in found.items()}


def launch_options(parameters: dict[str, Any]) -> dict[str, Any]:
    """A notebook's SERVER parameter (cookbook.server.SERVER_OPTIONS): its launch options."""
    return dict(parameters.get("SERVER") or {})


class SharedServers:
    """The servers `cookbook run` starts for its notebooks and hands to them (cookbook.server
    SHARED_ENV): one per (variant, engine) a notebook asks for, up for the whole run.

    The CPU engines only: its fixtures are small enough to keep several up. On a GPU a kept server
    would hold the memory a notebook's own second launch needs (04 starts a grounding model), and
    no two consecutive notebooks ask for the same model there, so nothing would be saved."""

    def __init__(self, engine: str, echo=print):
        from cookbook.server import SHARED_ENV

        self.engine, self.echo = engine, echo
        self.folder = Path(tempfile.mkdtemp(prefix="lfm25-shared-"))  # 0700
        self.registry = self.folder / "servers.json"
        self.servers: dict[tuple, Any] = {}
        self._previous_env = os.environ.get(SHARED_ENV)
        os.environ[SHARED_ENV] = str(self.registry)  # the notebooks' kernels inherit it
        self._write()

    def _write(self) -> None:
        fd = os.open(self.registry, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump([s.share_entry() for s in self.servers.values() if s.alive], fh)

    def wanted(self, notebook: Path, parameters: dict[str, Any]) -> tuple[str, str] | None:
        """The (variant, engine) of the server a notebook will ask for, if a shared one can be
        it (None: it launches none, or its own)."""
        if not launches_its_server(notebook):
            return None
        wanted = {**default_parameters(notebook), **parameters}
        options = launch_options(wanted)
        if any(options.get(name) is not None for name in ("model", "hw", "base_url")):
            return None  # it connects, or launches its own: shared servers serve the defaults
        return (wanted["VARIANT"], self.engine)

    def release_all_but(self, still_wanted: set) -> None:
        """Stop the shared servers no notebook still to run asks for: on two cores an idle
        server still costs memory and some CPU, and a later notebook needs both."""
        for key in [k for k in self.servers if k not in still_wanted]:
            self.servers.pop(key).stop()
        self._write()

    def prepare(self, notebook: Path, parameters: dict[str, Any]) -> float | None:
        """Start the server the notebook will ask for, unless it runs already; returns the
        start-up seconds spent for this notebook (None: nothing was started)."""
        from cookbook.server import ServerStartError, launch

        key = self.wanted(notebook, parameters)
        if key is None:
            return None
        wanted = {**default_parameters(notebook), **parameters}
        running = self.servers.get(key)
        if running is not None and running.alive:
            return None
        try:  # through the notebooks' own launch policy, keeping the other shared servers up
            server = launch(wanted["VARIANT"], self.engine, progress=False, exclusive=False,
                            startup_timeout_s=launch_options(wanted).get("startup_timeout_s"),
                            echo=lambda line: None)  # fmt: skip
        except ServerStartError as exc:  # the notebook will launch its own and show why
            self.echo(f"[run] could not start a shared {key[0]} server: {str(exc).splitlines()[0]}")
            return None
        self.servers[key] = server
        self._write()
        self.echo(f"[run] shared {server!r} started in {server.startup_s} s", flush=True)
        return server.startup_s

    def close(self) -> None:
        from cookbook.server import SHARED_ENV

        for server in self.servers.values():
            server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._previous_env is None:
            os.environ.pop(SHARED_ENV, None)
        else:
            os.environ[SHARED_ENV] = self._previous_env


def writable_out_dir(out_dir: Path | str) -> Path:
    """The --out folder, absolute and made, or a RunnerError saying why it cannot be used."""
    # Absolute: the notebooks run with notebooks/ as their working directory, and write their
    # results to the file RESULTS_ENV names.
    if not str(out_dir).strip():
        raise RunnerError("--out is empty: give a folder for the executed notebooks")
    try:
        out_dir = Path(out_dir).expanduser().resolve()
    except RuntimeError as exc:  # ~name of no user, or a link that leads back to itself
        what = "a symbolic link loop" if "loop" in str(exc).lower() else str(exc)
        raise RunnerError(f"--out {str(out_dir)!r}: {what}") from None
    if out_dir == NOTEBOOKS_DIR:
        raise RunnerError(
            f"--out {out_dir}: the executed notebooks would overwrite their sources there; give "
            "another folder (the default is runs/latest)"
        )
    blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RunnerError(f"--out {out_dir}: {blocking} is a file, not a folder; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".cookbook-write-check"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise RunnerError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    return out_dir


def run(
    notebooks: list[Path],
    out_dir: Path = DEFAULT_OUT,
    engine: str = "auto",
    variant: str | None = None,
    cell_timeout_s: float = CELL_TIMEOUT_S,
    echo=print,
    fresh_servers: bool = False,
) -> list[NotebookRun]:
    """Execute the notebooks in order. On the CPU engines, unless `fresh_servers`, a notebook that
    launches the same (variant, engine) as an earlier one gets the server that one used
    (SharedServers)."""
    out_dir = writable_out_dir(out_dir)
    # Decide the engine once, before any notebook: a GPU without SGLang fails here in seconds
    # (machine.EngineUnavailableError) instead of in every notebook, and nothing falls back.
    from cookbook import gpu, machine
    from cookbook.launch_plans import resolve_engine

    engine = resolve_engine(engine)
    if engine == "sglang" and machine.sglang_program() is None:  # asked for by name
        raise machine.no_sglang_error(gpu.detect())
    echo(f"[run] engine: {engine}", flush=True)
    context = run_context(engine)
    parameters: dict[str, Any] = {"ENGINE": engine}
    if variant:
        parameters["VARIANT"] = variant
    runs: list[NotebookRun] = []
    total = time.monotonic()
    # The kernels inherit it: no live progress bars in the notebooks this run records.
    previous_bars = os.environ.get(NO_PROGRESS_BARS_ENV)
    os.environ[NO_PROGRESS_BARS_ENV] = "1"
    shared = SharedServers(engine, echo) if engine.endswith("-cpu") and not fresh_servers else None
    try:
        for i, notebook in enumerate(notebooks):
            echo(f"[run] {notebook.stem} ...", flush=True)
            started = time.monotonic()
            try:
                if shared:
                    shared.release_all_but({shared.wanted(n, parameters) for n in notebooks[i:]})
                startup_s = shared.prepare(notebook, parameters) if shared else None
                result = run_one(notebook, out_dir, parameters, cell_timeout_s)
            except KeyboardInterrupt:
                # Keep what ran so far, this notebook recorded as interrupted, then stop.
                why = "KeyboardInterrupt: the run was interrupted (Ctrl-C) in this notebook"
                runs.append(
                    NotebookRun(notebook.stem, "failed", round(time.monotonic() - started, 1),
                                error=why)
                )  # fmt: skip
                write_summary(out_dir, runs, time.monotonic() - total, context)
                raise
            if startup_s is not None:  # the shared server was started for this notebook
                result.startup_s = round((result.startup_s or 0) + startup_s, 1)
                result.seconds = round(time.monotonic() - started, 1)
            runs.append(result)
            failure = f" -- {result.error.splitlines()[0]}" if result.error else ""
            echo(
                f"[run] {notebook.stem}: {result.status} in {result.seconds:.0f} s{failure}",
                flush=True,
            )
            if result.error:
                echo(failure_details(result), flush=True)
            write_summary(out_dir, runs, time.monotonic() - total, context)
    finally:
        if shared is not None:
            shared.close()
        if previous_bars is None:
            os.environ.pop(NO_PROGRESS_BARS_ENV, None)
        else:
            os.environ[NO_PROGRESS_BARS_ENV] = previous_bars
    return runs


def run_context(engine: str) -> dict[str, Any]:
    """Where and when a run happens: the provenance the docs site shows on every page."""
    import datetime
    import platform
    import subprocess

    from cookbook import gpu, machine

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=10,
        ).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    detection = gpu.detect()
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "engine_label": machine.engine_label(engine),
        "hardware": detection.summary,
        "hw": detection.hw,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "commit": commit,
    }


def write_summary(
    out_dir: Path, runs: list[NotebookRun], seconds: float, context: dict | None = None
) -> Path:
    path = Path(out_dir) / "summary.json"
    data = {
        **(context or {}),
        "seconds": round(seconds, 1),
        # Where the time goes: engine start-ups, against everything else the notebooks did.
        "startup_seconds": round(sum(r.startup_s or 0 for r in runs), 1),
        "passed": sum(r.status == "passed" for r in runs),
        "failed": sum(r.status == "failed" for r in runs),
        "notebooks": [asdict(r) for r in runs],
    }
    path.write_text(_redact(json.dumps(data, indent=2, default=str)))
    return path
