"""The GitHub Actions workflows: actionlint and zizmor pass, and each runs the README's own
commands (set-up lives in the Makefile and ci/, never in a second copy inside a workflow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def run_lines(workflow: dict) -> list[str]:
    return [
        step["run"].strip()
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "run" in step
    ]


def readme_commands() -> list[str]:
    """The commands of the README's 'The two commands' block, and `make docs`."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"], commands
    assert "make docs" in readme
    return commands


def test_there_are_the_four_workflows():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == [
        "ci.yml", "docs.yml", "gpu-notebooks.yml", "upstream-check.yml"
    ]  # fmt: skip


def test_actionlint_passes():
    out = subprocess.run([str(BIN / "actionlint"), *map(str, sorted(WORKFLOWS.glob("*.yml")))],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_zizmor_passes():
    out = subprocess.run([str(BIN / "zizmor"), "--offline", str(WORKFLOWS)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["ci.yml", "gpu-notebooks.yml", "docs.yml"])
def test_workflows_run_the_readmes_commands_not_a_copy_of_them(name):
    make_run, make_test = readme_commands()
    lines = run_lines(load(name))
    for line in lines:
        for copy in ("ci/setup.sh", "pip install", "pytest", "cookbook run", "papermill", "ruff"):
            assert copy not in line, f"{name}: {line!r} repeats what the Makefile does"
    expected = {
        "ci.yml": [make_test],
        "gpu-notebooks.yml": [make_run],
        "docs.yml": [make_run, "make docs"],
    }[name]
    for command in expected:
        assert any(line == command or line.startswith(command + " ") for line in lines), (
            name,
            command,
        )


def test_the_gpu_workflow():
    wf = load("gpu-notebooks.yml")
    job = wf["jobs"]["notebooks"]
    triggers = wf[True] if True in wf else wf["on"]  # YAML reads the key `on` as True
    assert {"workflow_dispatch", "schedule", "pull_request"} <= set(triggers)
    assert "gpu-notebooks" in job["if"]  # pull requests only when labelled
    assert job["runs-on"] == '${{ fromJSON(vars.GPU_RUNNER_LABELS || \'["self-hosted", "gpu"]\') }}'
    assert wf["concurrency"]["group"].endswith("${{ github.ref }}")
    assert job["timeout-minutes"] > 0
    run_step = next(s for s in job["steps"] if s.get("run", "").startswith("make run"))
    assert run_step["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    assert "--cell-timeout" in run_step["run"]
    text = (WORKFLOWS / "gpu-notebooks.yml").read_text()
    assert not re.search(r"echo[^\n]*HF_TOKEN", text), "HF_TOKEN is never echoed"
    assert text.count("secrets.HF_TOKEN") == 1
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "runs/latest/" and upload["if"] == "always()"
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in job["steps"])
    assert any("'sglang'" in s.get("run", "") for s in job["steps"])  # not the CPU path
    docs = wf["jobs"]["docs"]
    assert docs["uses"].endswith(".github/workflows/docs.yml") and docs["with"]["artifact"]


def test_the_upstream_check_workflow():
    """Weekly and by hand, `make upstream-check` (its set-up is the Makefile's, as for the others);
    a difference fails the step, the report goes to the job summary."""
    wf = load("upstream-check.yml")
    triggers = wf[True] if True in wf else wf["on"]  # YAML reads the key `on` as True
    assert set(triggers) == {"schedule", "workflow_dispatch"} and triggers["schedule"][0]["cron"]
    assert wf["permissions"] == {}
    [job] = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read"} and job["timeout-minutes"] > 0
    assert job["container"] == load("ci.yml")["jobs"]["test"]["container"]  # the same Python
    lines = run_lines(wf)
    for line in lines:
        for copy in ("ci/setup.sh", "pip install", "pytest", "cookbook upstream-check"):
            assert copy not in line, f"upstream-check.yml: {line!r} repeats the Makefile"
    check = next(s for s in job["steps"] if s.get("run", "").startswith("make upstream-check"))
    assert check["shell"] == "bash" and "|" in check["run"]  # bash -o pipefail: make's status
    summary = next(s for s in job["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["if"] == "always()"
    make = (REPO / "Makefile").read_text()
    assert "\nupstream-check:" in make and ".venv/bin/cookbook upstream-check" in make


def test_every_action_is_pinned_to_a_commit():
    for path in WORKFLOWS.glob("*.yml"):
        for ref in re.findall(r"uses:\s*([^\s#]+)", path.read_text()):
            if ref.startswith(("./", "$/")):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}"
