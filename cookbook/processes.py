"""Processes this Python starts and owns: each in its own session with a private log, stopped
on stop(), at interpreter exit, and, through a watchdog (cookbook.watchdog), even when the owner
is killed with SIGKILL. Servers and the router both stand on it; so do the ports they bind."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cookbook.errors import ServerStartError
from cookbook.paths import REPO_ROOT
from cookbook.watchdog import kill_session

# Set by `cookbook run` for its notebooks: a progress bar saved into an executed notebook shows
# only its first state (a frozen "0%" on the docs site), so there the outcome is printed instead.
NO_PROGRESS_BARS_ENV = "COOKBOOK_NO_PROGRESS_BARS"
LOG_TAIL_LINES = 40
STOP_GRACE_S = 10.0
POLL_S = 0.5
PROGRESS_STEP_S = 5


# ----- ports --------------------------------------------------------------------------------


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


def url_host(host: str) -> str:
    """The host as a client URL names it: loopback for a wildcard, IPv6 in brackets."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# ----- logs ---------------------------------------------------------------------------------


def progress_bars() -> bool:
    """Whether live progress bars make sense here (not in a notebook `cookbook run` records)."""
    return os.environ.get(NO_PROGRESS_BARS_ENV) != "1"


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
    shared = info.st_mode & 0o002 and not info.st_mode & stat.S_ISVTX
    if shared and not stat.S_ISLNK(info.st_mode):
        raise ServerStartError(
            f"cannot use {what}: every user can write there, so others could replace the logs; "
            "use a folder only you can write (no engine was started)"
        )
    if chosen is None:
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            raise ServerStartError(
                f"{what} is not this user's own directory: remove it or set COOKBOOK_LOG_DIR "
                "(no engine was started)"
            )
        if info.st_mode & 0o077:
            path.chmod(0o700)
    return path


def open_private(path: Path):
    """Open a log for appending, readable by its owner only (0600), never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # a file left from before keeps no wider mode
    return os.fdopen(fd, "ab")


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 200_000))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the watchdog still covers it


# ----- the process --------------------------------------------------------------------------


@dataclass
class OwnedProcess:
    """A process this Python started and owns, with its output in a private log: in its own
    session (so that everything it starts can be found and stopped), killed by the kernel if the
    starting thread dies (PDEATHSIG), and watched by cookbook.watchdog, which ends it if its owner
    is killed, even by SIGKILL."""

    proc: subprocess.Popen
    create_time: float
    watchdog: subprocess.Popen
    log_path: Path | None = None
    log_file: object = field(default=None, repr=False)

    @classmethod
    def start(
        cls, argv: list[str], env: dict[str, str], log_path: Path, header: str = ""
    ) -> OwnedProcess:
        """Open `log_path` (0600), write `header` to it, and spawn `argv` writing into it."""
        log_file = open_private(log_path)
        if header:
            log_file.write(header.encode())
            log_file.flush()
        try:
            owned = cls.spawn(argv, env, log_file)
        except BaseException:
            log_file.close()
            raise
        owned.log_path, owned.log_file = log_path, log_file
        return owned

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
            [sys.executable, "-m", "cookbook.watchdog", str(owner.pid), repr(owner.create_time()),
             str(proc.pid), repr(create_time)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, cwd=str(REPO_ROOT),
        )  # fmt: skip
        return cls(proc, create_time, watchdog)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def wait_ready(
        self,
        is_ready: Callable[[], bool],
        timeout_s: float,
        fail: Callable[[str], Exception],
        *,
        not_ready: str | None = None,
        poll_s: float = POLL_S,
        progress: str | None = None,
    ) -> float:
        """Poll `is_ready` until it says so; returns the seconds it took. Raises `fail(what)` if
        the process exits first or `timeout_s` passes (`not_ready` words the timeout). With
        `progress`, a tqdm line of that name shows the seconds spent, refreshed every few."""
        started = time.monotonic()
        bar = None
        if progress and progress_bars():
            from tqdm import tqdm

            bar = tqdm(total=int(timeout_s), desc=progress, unit="s", file=sys.stderr,
                       bar_format="{desc}: {n_fmt}s elapsed (timeout {total_fmt}s)")  # fmt: skip
        try:
            while True:
                code = self.proc.poll()
                elapsed = time.monotonic() - started
                if code is not None:
                    how = f"signal {-code}" if code < 0 else f"code {code}"
                    raise fail(f"exited with {how} before it was ready ({elapsed:.1f} s)")
                if is_ready():
                    return time.monotonic() - started
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    raise fail(not_ready or f"was not ready within {timeout_s:.0f} s")
                if bar is not None and int(elapsed) >= bar.n + PROGRESS_STEP_S:
                    bar.n = int(elapsed)  # a few refreshes, not one per poll, keep logs short
                    bar.refresh()
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()

    def end(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the process group, SIGKILL after grace_s, then whatever else its session
        still holds; the watchdog goes too, and the log is closed. Returns the exit code."""
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
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return proc.returncode
