"""Owned processes' private files: where logs may go."""

from __future__ import annotations

import os

import pytest

from cookbook.errors import ServerStartError
from cookbook.processes import log_directory


def test_a_log_folder_every_user_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ServerStartError, match="every user can write there"):
        log_directory(shared)


def test_a_shared_folder_with_the_sticky_bit_is_used(tmp_path):
    # Like /tmp: others can write there but cannot replace this user's files.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert log_directory(sticky) == sticky


def test_a_new_log_folder_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("COOKBOOK_LOG_DIR", str(tmp_path / "logs"))
    made = log_directory()
    assert made.is_dir() and os.stat(made).st_mode & 0o777 == 0o700


def test_no_live_progress_bars_in_the_notebooks_cookbook_run_records(monkeypatch):
    # A bar saved into an executed notebook shows its first state only (a frozen 0% on the site).
    from cookbook import processes
    from cookbook.bench import run

    monkeypatch.delenv(processes.NO_PROGRESS_BARS_ENV, raising=False)
    assert processes.progress_bars() and run._Progress(3, True).bar is not None
    monkeypatch.setenv(processes.NO_PROGRESS_BARS_ENV, "1")
    assert not processes.progress_bars() and run._Progress(3, True).bar is None
