"""Where the cookbook is published: the one Repository URL of pyproject.toml, and the Colab links
built from it (the notebooks' badges and Colab clone lines must agree with it; a test checks)."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"


@functools.cache
def repository_url() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"]


def github_slug() -> str:
    """owner/name of the repository."""
    return repository_url().removeprefix("https://github.com/")


def colab_url(notebook: str) -> str:
    return (
        f"https://colab.research.google.com/github/{github_slug()}/blob/{BRANCH}/"
        f"notebooks/{notebook}"
    )
