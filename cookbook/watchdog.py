"""Kill a server's processes when the Python process that owns it dies, even by SIGKILL.

Started by :class:`cookbook.server.Server` next to each engine it launches, in its own session so
that it outlives the owner::

    python -m cookbook.watchdog OWNER_PID OWNER_CREATE_TIME ENGINE_PID ENGINE_CREATE_TIME

The engine is started as a session leader, so every process it spawns stays in its session
(a process can only move to another group of its own session, and only `setsid` leaves it).
The session's members other than the leader were therefore all started by the engine; the
leader itself is recognised by its creation time. Nothing else is ever signalled.
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


def is_same_process(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return (
            abs(proc.create_time() - create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def session_processes(leader_pid: int, leader_create_time: float) -> list[psutil.Process]:
    """The engine's leader (while it is the same process) and every other member of its session."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == leader_pid:
                if is_same_process(leader_pid, leader_create_time):
                    found.append(proc)
            elif os.getsid(proc.pid) == leader_pid:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def kill_session(leader_pid: int, leader_create_time: float, grace_s: float = GRACE_S) -> None:
    """SIGTERM, wait, SIGKILL: the engine and everything it started."""
    terminate_then_kill(session_processes(leader_pid, leader_create_time), grace_s)


def terminate_then_kill(procs: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM each, wait up to grace_s, SIGKILL what is left and wait for it."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def watch(
    owner_pid: int, owner_create_time: float, engine_pid: int, engine_create_time: float
) -> int:
    while True:
        if not is_same_process(owner_pid, owner_create_time):
            kill_session(engine_pid, engine_create_time)
            return 0
        if not session_processes(engine_pid, engine_create_time):
            return 0  # the server ended and its owner cleaned up: nothing left to guard
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the owner's terminal is not for us
    owner_pid, owner_ct, engine_pid, engine_ct = (
        int(argv[0]),
        float(argv[1]),
        int(argv[2]),
        float(argv[3]),
    )
    return watch(owner_pid, owner_ct, engine_pid, engine_ct)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
