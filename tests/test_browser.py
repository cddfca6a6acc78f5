"""The Deploy panel in a real browser: JupyterLab (headless, 127.0.0.1, a token) driven by
Chromium through Selenium.

It opens a copy of notebooks/09_deploy_panel.ipynb, runs the cells up to the panel, changes the
rendered hardware, variant, TP and Docker controls, and reads the command and the badge off the
page; then types a token into the masked field, launches the server from the page, checks that the
token reached the engine's environment and nothing on the page, and stops it. Screenshots go to
artifacts/browser/.

Needs Debian's `chromium` and `chromium-driver`, and `jupyterlab` + `selenium` in this Python;
without them it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from cookbook.processes import free_port
from tests.browser_support import CHROMEDRIVER, CHROMIUM, WAIT_S, chromium, stop_tree

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "09_deploy_panel.ipynb"
SHOTS = REPO / "artifacts" / "browser"
CANARY = "hf_CANARY_browser_5e0a44"

LAB_START_S = 90
LAUNCH_S = 420  # SGLang starts on the CPU in 40-150 s on 2 cores (more when the machine is busy)

_missing = [
    what
    for what, ok in (
        ("the chromium browser (apt-get install chromium)", CHROMIUM),
        ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER),
        ("jupyterlab (pip install jupyterlab)", importlib.util.find_spec("jupyterlab")),
        ("selenium (pip install selenium)", importlib.util.find_spec("selenium")),
    )
    if not ok
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(_missing), reason="browser test needs " + ", ".join(_missing)),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a random token, in a directory holding a copy of notebook 07,
    with its own config, settings, workspace and runtime directories."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    home = root / ".jupyter-home"
    config = home / "config"
    (config / "labconfig").mkdir(parents=True)
    # No "would you like news?" toast over the notebook.
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    token, port = secrets.token_hex(16), free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "COOKBOOK_LOG_DIR": str(root / "logs"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_TOKEN", None)
    log = (root / "jupyterlab.log").open("wb")
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyterlab exited ({proc.returncode}):\n{_tail(root)}")
            try:
                url = f"{base}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyterlab did not answer within {LAB_START_S} s:\n{_tail(root)}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "proc": proc}
    finally:
        with contextlib.suppress(OSError):  # shut the kernels down cleanly first
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10)  # noqa: S310 (loopback)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        stop_tree(proc)
        log.close()


def _tail(root: Path, lines: int = 30) -> str:
    path = root / "jupyterlab.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def browser(lab):
    with chromium(lab["root"] / "driver.log") as driver:
        yield driver


# ----- page helpers ----------------------------------------------------------------------------


def wait_for(driver, predicate, what: str, timeout_s: float = WAIT_S):
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except WebDriverException as exc:  # stale elements while widgets re-render
            last_error = exc
        time.sleep(0.25)
    shot(driver, "timeout")
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({last_error})")


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return "\n".join(el.text for el in found)


def shot(driver, name: str) -> Path:
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    panels = driver.find_elements(By.CSS_SELECTOR, ".cookbook-deploy-panel")
    if panels:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", panels[0])
        panels[0].screenshot(str(path))
    else:
        driver.save_screenshot(str(path))
    return path


def pick(driver, widget_class: str, label: str) -> None:
    """Choose an option of an ipywidgets Dropdown by its label, as a user does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.CSS_SELECTOR, f".{widget_class} select")).select_by_visible_text(
        label
    )


def toggle(driver, widget_class: str, label: str) -> None:
    """Click the button of an ipywidgets ToggleButtons with this label."""
    from selenium.webdriver.common.by import By

    buttons = driver.find_elements(By.CSS_SELECTOR, f".{widget_class} button")
    match = [b for b in buttons if b.text.strip() == label]
    assert match, f"no {label!r} button in .{widget_class}: {[b.text for b in buttons]}"
    match[0].click()


def command_lines(driver) -> list[str]:
    return [line for line in text_of(driver, ".cookbook-command .cb-line").splitlines()]


def badge(driver) -> str:
    return text_of(driver, ".cookbook-badge .cb-badge").strip()


# ----- the test ------------------------------------------------------------------------------


def test_deploy_panel_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
    wait_for(
        driver,
        lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"),
        "the notebook's cells",
    )
    wait_for(
        driver,
        lambda: "Idle" in text_of(driver, ".jp-StatusBar-Widget"),
        "the kernel to be idle",
        timeout_s=120,
    )

    # Run from the top through the panel cell: title, parameters, where-it-runs prose, Colab
    # set-up, prose, panel.
    driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[0].click()
    for _ in range(6):  # keys go to the focused notebook, as typed
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        time.sleep(0.3)
    wait_for(
        driver,
        lambda: "sglang serve" in text_of(driver, ".cookbook-command"),
        "the panel to render",
        timeout_s=120,
    )

    # No GPU here: the H100 cell, Verified, as upstream.
    lines = command_lines(driver)
    assert lines[0] == "sglang serve \\"
    assert "  --model-path LiquidAI/LFM2.5-1.2B-Instruct \\" in lines
    assert badge(driver) == "✔ Verified"
    assert text_of(driver, ".cookbook-submit").strip() == ""
    shot(driver, "01-h100-instruct-verified")

    # Hardware B200, variant 8B-A1B: B200's own flags.
    pick(driver, "cookbook-hw", "NVIDIA B200 · verified")
    pick(driver, "cookbook-variant", "LFM2.5-8B-A1B (8b-a1b)")
    wait_for(
        driver,
        lambda: "  --model-path LiquidAI/LFM2.5-8B-A1B \\" in command_lines(driver),
        "the 8B-A1B command",
    )
    assert "  --attention-backend flashinfer \\" in command_lines(driver)
    assert badge(driver) == "✔ Verified"

    # Playground: TP 2 -> one line struck out in red, one added in green, Not Verified, Submit.
    toggle(driver, "cookbook-tp", "2")
    wait_for(driver, lambda: badge(driver) == "⚠ Not Verified", "the badge to flip")
    added = driver.find_elements(By.CSS_SELECTOR, ".cookbook-command .cb-add")
    removed = driver.find_elements(By.CSS_SELECTOR, ".cookbook-command .cb-del")
    assert [e.text for e in added] == ["+   --tp 2 \\"]
    assert [e.text for e in removed] == ["-   --tp 1"]
    assert added[0].value_of_css_property("color") in ("rgba(26, 127, 55, 1)", "rgb(26, 127, 55)")
    struck = removed[0].find_element(By.TAG_NAME, "s")
    assert struck.text == "--tp 1" and "line-through" in struck.value_of_css_property(
        "text-decoration"
    )
    assert removed[0].value_of_css_property("color") in ("rgba(207, 34, 46, 1)", "rgb(207, 34, 46)")
    link = driver.find_element(By.CSS_SELECTOR, ".cookbook-submit a.cb-submit")
    href = link.get_attribute("href")
    assert href.startswith("https://github.com/sgl-project/sglang/issues/new?")
    assert "b200+%2F+8b-a1b" in href and link.is_displayed()
    shot(driver, "02-b200-8b-a1b-tp2-diff")

    # Back to no override: Verified again, no Submit link.
    toggle(driver, "cookbook-tp", "none")
    wait_for(driver, lambda: badge(driver) == "✔ Verified", "the badge to flip back")
    assert not driver.find_elements(By.CSS_SELECTOR, ".cookbook-submit a")

    # A GPU outside the matrix, in Docker: derived recipe, Not Verified from the start.
    pick(driver, "cookbook-hw", "NVIDIA L4 · derived from h100 (Not Verified)")
    toggle(driver, "cookbook-docker", "Docker")
    wait_for(
        driver, lambda: command_lines(driver)[0] == "docker run --gpus all \\", "the docker command"
    )
    lines = command_lines(driver)
    assert "  --env HF_TOKEN \\" in lines and "    --model-path LiquidAI/LFM2.5-8B-A1B \\" in lines
    assert badge(driver) == "⚠ Not Verified"
    assert "derived from the verified h100/8b-a1b cell" in text_of(driver, ".cookbook-badge")

    # The token: typed into the masked field, gone from it at once, never on the page.
    token_input = driver.find_element(By.CSS_SELECTOR, ".cookbook-hf-token input")
    assert token_input.get_attribute("type") == "password"
    token_input.send_keys(CANARY, Keys.ENTER)
    wait_for(driver, lambda: token_input.get_attribute("value") == "", "the field to empty")
    wait_for(
        driver,
        lambda: "set for Launch" in token_input.get_attribute("placeholder"),
        "the field to say the token is set",
    )
    assert CANARY not in driver.page_source
    shot(driver, "03-l4-docker-not-verified")

    # Copy puts the exact command on the (browser's) clipboard.
    expected = "\n".join(lines)  # without an override the view is the command, line by line
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": lab["base"], "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    driver.find_element(By.CSS_SELECTOR, ".cookbook-copy button.cb-copy").click()
    wait_for(driver, lambda: text_of(driver, ".cookbook-copy button") == "Copied", "Copied")
    clipboard = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, e => done('ERROR ' + e));"
    )
    assert clipboard == expected

    # Launch from the page: SGLang on the CPU here; the token reaches the engine, not the page.
    pick(driver, "cookbook-variant", "LFM2.5-1.2B-Instruct (instruct)")
    port_input = driver.find_element(By.CSS_SELECTOR, ".cookbook-port input")
    port_input.clear()
    port_input.send_keys(str(free_port()), Keys.ENTER)
    driver.find_element(By.XPATH, "//button[normalize-space()='Launch']").click()
    wait_for(
        driver,
        lambda: (
            "Starting" in text_of(driver, ".cookbook-status")
            or "Ready" in text_of(driver, ".cookbook-status")
        ),
        "progress",
    )
    shot(driver, "04-starting")
    status = wait_for(
        driver,
        lambda: (
            (t := text_of(driver, ".cookbook-status")) and ("Ready" in t or "failed" in t) and t
        ),
        "the server to be ready",
        timeout_s=LAUNCH_S,
    )
    assert "Ready: fixture/lfm2-tiny-chat" in status, status + text_of(driver, ".cookbook-log")
    pid = int(re.search(r"pid (\d+)", status).group(1))
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"HF_TOKEN={CANARY}".encode() in environ
        assert CANARY not in driver.page_source
        driver.find_element(By.XPATH, "//button[normalize-space()='Send the check']").click()
        wait_for(
            driver,
            lambda: "->" in text_of(driver, ".cookbook-log"),
            "the check's answer",
            timeout_s=120,
        )
        shot(driver, "05-ready-and-checked")
    finally:
        driver.find_element(By.XPATH, "//button[normalize-space()='Stop']").click()
        wait_for(driver, lambda: "Stopped" in text_of(driver, ".cookbook-status"), "the stop")
    assert not psutil.pid_exists(pid)
    shot(driver, "06-stopped")
    logs = list((lab["root"] / "logs").glob("*.log"))
    assert logs and all(CANARY not in p.read_text(errors="replace") for p in logs)
