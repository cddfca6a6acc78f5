"""The docs site, built from a fresh run of every notebook and opened in headless Chromium.

Every notebook page loads without console errors, shows code cells and outputs, every image and
plot loads, the provenance banner is there (and says "fixture" for this CPU run), the copy
buttons and the search box work, every internal link resolves, and the matrix page lists the
24 verified cells. Screenshots go to artifacts/docs/.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cookbook.processes import free_port
from cookbook_tools import docs
from tests.browser_support import CHROMEDRIVER, CHROMIUM, WAIT_S, chromium, stop_tree
from tests.conftest import CANARY, RUN_TIMEOUT

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "artifacts" / "docs"
_missing = [
    what
    for what, ok in (
        ("the chromium browser (apt-get install chromium)", CHROMIUM),
        ("chromedriver (apt-get install chromium-driver)", CHROMEDRIVER),
        ("selenium (pip install selenium)", importlib.util.find_spec("selenium")),
    )
    if not ok
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(_missing), reason="the docs browser test needs " + ", ".join(_missing)),
]


@pytest.fixture(scope="module")
def site(executed, tmp_path_factory):
    out, _, _ = executed
    site_dir = tmp_path_factory.mktemp("docs") / "site"
    docs.build(out, site_dir, echo=lambda *a, **k: None)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(site_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/index.html", timeout=5):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the static server did not answer within 30 s")
                time.sleep(0.2)
        summary = json.loads((out / "summary.json").read_text())
        yield {"base": base, "dir": site_dir, "summary": summary}
    finally:
        stop_tree(server)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def severe_console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


@RUN_TIMEOUT
def test_the_site_in_a_real_browser(site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, summary = site["base"], site["summary"]
    notebooks = [n["notebook"] for n in summary["notebooks"]]
    assert len(notebooks) >= 7
    links: set[str] = set()
    with chromium(tmp_path / "driver.log", window="1300,1800") as driver:
        driver.get(f"{base}/index.html")
        assert "Runnable recipes for serving" in driver.page_source  # the README's opening
        assert severe_console_errors(driver) == []
        shot(driver, "00-landing")
        for name in notebooks:
            driver.get(f"{base}/notebooks/{name}.html")
            errors = severe_console_errors(driver)
            assert errors == [], (name, errors)
            cells = driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")
            outputs = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
            assert cells and outputs, f"{name}: code cells and outputs"
            broken = driver.execute_script(
                "return Array.from(document.images)"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80));"
            )
            assert broken == [], (name, broken)
            banner = driver.find_element(By.CSS_SELECTOR, "#provenance")
            assert "fixture" in banner.text and "not LFM2.5" in banner.text, name
            assert "engine sglang-cpu" in banner.text and "hardware" in banner.text
            # mkdocs-jupyter's copy control, one per code cell
            copies = driver.find_elements(By.CSS_SELECTOR, ".zeroclipboard-container")
            code_cells = sum(
                c["cell_type"] == "code"
                for c in json.loads((site["dir"] / "downloads" / f"{name}.ipynb").read_text())[
                    "cells"
                ]
            )
            assert len(copies) >= code_cells, f"{name}: a copy button on every code cell"
            download = banner.find_element(By.PARTIAL_LINK_TEXT, "Download").get_attribute("href")
            assert status_of(download) == 200
            colab = banner.find_element(By.PARTIAL_LINK_TEXT, "Colab").get_attribute("href")
            assert colab.endswith(f"/notebooks/{name}.ipynb")
            links |= {
                a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a[href]")
            }
            shot(driver, name)
        # Notebook 06's plots are images on its page.
        driver.get(f"{base}/notebooks/06_throughput_benchmark.html")
        plots = driver.execute_script(
            "return Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
            ".filter(i => i.naturalWidth > 0).length;"
        )
        assert plots >= 2, "the benchmark plots rendered"

        driver.get(f"{base}/matrix.html")
        verified_rows = [
            row for row in driver.find_elements(By.CSS_SELECTOR, "table tr")
            if "✔ Verified" in row.text
        ]  # fmt: skip
        assert len(verified_rows) == 27  # 24 LFM2.5 cells, 3 VL-3B
        assert "Unsupported" in driver.page_source and "NVIDIA T4" in driver.page_source
        shot(driver, "matrix")
        links |= {a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a")}

        # The search box finds a notebook by a word in it.
        driver.find_element(By.CSS_SELECTOR, "label.md-search__icon, .md-search__input").click()
        box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
        box.send_keys("reasoning_content", Keys.ENTER)
        deadline = time.monotonic() + WAIT_S
        while not driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item"):
            assert time.monotonic() < deadline, "the search gave no result"
            time.sleep(0.25)
        shot(driver, "search")

    internal = {
        urllib.parse.urldefrag(link)[0]
        for link in links
        if link and link.startswith(base) and not link.startswith(f"{base}/search")
    }
    dead = sorted(link for link in internal if status_of(link) != 200)
    assert internal and dead == []


@RUN_TIMEOUT
def test_the_site_leaks_no_token(site):
    leaked = [
        str(p) for p in site["dir"].rglob("*")
        if p.is_file() and p.suffix in (".html", ".ipynb", ".json", ".js")
        and CANARY in p.read_text(errors="replace")
    ]  # fmt: skip
    assert leaked == []


def test_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(docs.DocsError, match="no executed run in .* run `make run` first"):
        docs.build(tmp_path / "nothing", tmp_path / "site")


def test_the_job_summary_sets_the_benchmark_beside_the_card(tmp_path):
    entry = {
        "notebook": "06_throughput_benchmark", "status": "passed", "seconds": 80.0,
        "engine": "sglang", "variant": "instruct", "model": "LiquidAI/LFM2.5-1.2B-Instruct",
        "startup_s": 40.0, "error": None,
        "results": {"scale": "gpu", "card_hw": "h100", "card_workloads": {
            "latency": {"mean_ttft_ms": 20.0, "median_ttft_ms": 19.0, "mean_tpot_ms": 2.1,
                        "median_tpot_ms": 2.0, "total_token_throughput": 930.0},
            "throughput": {"mean_ttft_ms": 190.0, "median_ttft_ms": 170.0, "mean_tpot_ms": 7.2,
                           "median_tpot_ms": 7.1, "total_token_throughput": 25000.0}}},
    }  # fmt: skip
    summary = {"passed": 1, "failed": 0, "seconds": 90.0, "engine": "sglang",
               "hardware": "1x NVIDIA H100 80GB HBM3 -> h100", "notebooks": [entry]}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = docs.run_summary_markdown(tmp_path)
    assert "1 passed, 0 failed in 90.0 s on 1x NVIDIA H100 80GB HBM3 -> h100" in text
    assert "| 06_throughput_benchmark | passed | 80.0 | 40.0 | sglang |" in text
    assert "not comparable" not in text  # SGLang at GPU scale on the card's GPU
    # The card's 18.90 ms TTFT (a mean, as both pages record it) beside our mean and median.
    assert (
        "| latency | ttft_ms (the mean, as both pages record it) | 18.9 | "
        "mean 20.00, median 19.00 |" in text
    )
    assert "| throughput | total_token_throughput (tok/s) | 26099 | value 25000.00 |" in text
