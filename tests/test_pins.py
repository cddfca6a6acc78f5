"""pyproject.toml and environment.yml pin the same versions; every dependency is pinned."""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([\w.+\-]+)$")


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        match = PIN.match(req.strip())
        assert match, f"{req!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


def test_pyproject_pins_everything():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    _pins(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        assert reqs, extra
        _pins(reqs)
    assert set(project["optional-dependencies"]) == {"gpu", "cpu", "dev"}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = _pins([r for r in pip_section if not r.startswith("-e")])
    assert listed == expected
    assert "-e ." in pip_section


def test_side_environments_share_the_main_pins():
    # A package pinned both for the kernel and in a side environment has one version.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    main = _pins(project["dependencies"])
    for name in ("requirements-cpu-engine.txt",):
        lines = (REPO / "ci" / name).read_text().splitlines()
        side = _pins([line for line in lines if line and not line.startswith("#")])
        differ = {k: (v, side[k]) for k, v in main.items() if k in side and side[k] != v}
        assert differ == {}, f"ci/{name} disagrees with pyproject.toml: {differ}"


def sglang_pins() -> dict[str, str]:
    """The exact pins of the gpu extra's SGLang, from its metadata in .venvs/sglang."""
    import glob

    metadata = glob.glob(str(REPO / ".venvs/sglang/lib/python*/site-packages/sglang-*"
                             ".dist-info/METADATA"))  # fmt: skip
    assert metadata, "no SGLang in .venvs/sglang: bash ci/setup.sh sglang"
    pins = {}
    for line in Path(metadata[0]).read_text().splitlines():
        match = re.match(r"Requires-Dist: ([A-Za-z0-9_.-]+)==([^;\s]+)$", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


@pytest.mark.engine
def test_sglang_pins_an_openai_the_kernel_cannot_hold():
    pins = sglang_pins()
    assert pins["openai"] == "2.8.0"  # why SGLang has an environment of its own (README)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _pins(project["dependencies"])["openai"] != pins["openai"]
    installed = glob.glob(
        str(REPO / ".venvs/sglang/lib/python*/site-packages/openai-2.8.0.dist-info")
    )
    assert installed, "SGLang's environment holds SGLang's own openai"
