"""Where things are: the checkout's folders, and where the cookbook is published (the one
Repository URL of pyproject.toml, and the Colab links built from it; a test checks that the
notebooks' badges and Colab clone lines agree with it)."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
FIXTURES_DIR = DATA_DIR / "fixtures"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Put on an engine's PYTHONPATH: the key guard, the router shim, the CPU stand-ins.
ENGINE_SIDE_DIR = Path(__file__).resolve().parent / "engine_side"
VENVS_DIR = REPO_ROOT / ".venvs"
BRANCH = "main"


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def repository_url() -> str:
    return pyproject()["urls"]["Repository"]


def github_slug() -> str:
    """owner/name of the repository."""
    return repository_url().removeprefix("https://github.com/")


def repository_file_url(relative: str, folder: bool = False) -> str:
    """A file (or folder) of the repository on GitHub, on the published branch."""
    return f"{repository_url()}/{'tree' if folder else 'blob'}/{BRANCH}/{relative}"


def colab_url(notebook: str) -> str:
    return (
        f"https://colab.research.google.com/github/{github_slug()}/blob/{BRANCH}/"
        f"notebooks/{notebook}"
    )
