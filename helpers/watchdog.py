"""Kill a server's process tree when the Python process that owns it dies, even by SIGKILL.

Started by :class:`helpers.server.Server` next to each engine it launches, in its own session so
that it outlives the owner::

    python -m helpers.watchdog OWNER_PID OWNER_CREATE_TIME ENGINE_PID

It only ever signals the engine process it was given and that process's own descendants and
process group (the engine is started as a session leader, so its group id is its pid).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil

POLL_S = 0.25
GRACE_S = 5.0


def _same_process(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except psutil.Error:
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def kill_tree(known: dict[int, psutil.Process], pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM, wait, SIGKILL: the known processes and what is left in the engine's group."""
    procs = {p.pid: p for p in [*known.values(), *_group_members(pgid)]}
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()  # psutil checks the pid still names the same process
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def watch(owner_pid: int, owner_create_time: float, engine_pid: int) -> int:
    try:
        engine = psutil.Process(engine_pid)
    except psutil.Error:
        return 0
    known: dict[int, psutil.Process] = {engine_pid: engine}
    while True:
        if engine.is_running() and engine.status() != psutil.STATUS_ZOMBIE:
            try:
                for child in engine.children(recursive=True):
                    known.setdefault(child.pid, child)
            except psutil.Error:
                pass
        elif not any(p.is_running() for p in known.values()) and not _group_members(engine_pid):
            return 0  # the server ended on its own; nothing to guard
        if not _same_process(owner_pid, owner_create_time):
            kill_tree(known, engine_pid)
            return 0
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the owner's terminal is not for us
    owner_pid, owner_create_time, engine_pid = int(argv[0]), float(argv[1]), int(argv[2])
    return watch(owner_pid, owner_create_time, engine_pid)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
