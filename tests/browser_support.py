"""Headless Chromium for the browser tests (Debian's chromium + chromedriver), and clean-up of
the processes a test starts: every one is stopped by pid, with its descendants."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil

from cookbook.watchdog import terminate_then_kill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 60


def stop_tree(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """Terminate a process we started and every descendant of it, then kill what is left."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    terminate_then_kill(family, grace_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)


@contextlib.contextmanager
def chromium(driver_log: Path, window: str = "1400,2200") -> Iterator:
    """A headless Chromium driven by selenium; quits it and whatever it left on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={window}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(driver_log))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver_pid = service.process.pid if service.process else None
        family = []
        if driver_pid:
            with contextlib.suppress(psutil.Error):
                family = psutil.Process(driver_pid).children(recursive=True)
        with contextlib.suppress(Exception):
            driver.quit()
        for p in family:  # chromium processes quit() may have left
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(family, timeout=10)
