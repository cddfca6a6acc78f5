"""The README, CONTRIBUTING.md and the guides in docs/ as files: the README stays short, every
guide is in the docs site's navigation, and every relative link points to a file that exists
(on GitHub, and on the site, where links that leave docs/ go to the repository on GitHub).

Fast: nothing is built or served (test_docs_site.py builds the site and opens it in a browser).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cookbook import paths
from cookbook_tools import docs

REPO = Path(__file__).resolve().parent.parent
README_LIMIT_BYTES = 10_240  # the README is for the person who just arrived; details go in docs/
GUIDES = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *GUIDES]

_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links of `text` that are paths (no URL, no bare anchor),
    outside code blocks and code spans."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return [
        target
        for target in _LINK.findall(prose)
        if not _EXTERNAL.match(target) and not target.startswith("#")
    ]


def test_the_link_finder():
    text = (
        "[a](docs/a.md) [`b`](../data/b.yaml#key) [c](https://x.org/c.md) [d](#here)\n"
        '`[not](a-link.md)`\n```\n[nor](this.md)\n```\n![img](images/i.png "title")\n'
    )
    assert relative_links(text) == ["docs/a.md", "../data/b.yaml#key", "images/i.png"]


def test_there_are_guides():
    assert GUIDES, "no Markdown pages in docs/"


def test_the_readme_is_short():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_LIMIT_BYTES, (
        f"README.md is {size} bytes (at most {README_LIMIT_BYTES}): move details into docs/"
    )


def test_the_readme_keeps_its_opening_for_the_landing_page():
    opening = docs.readme_opening()
    assert "Runnable recipes for serving" in opening
    # The landing page shows the opening on the site: no link there may be relative.
    assert relative_links(opening) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_points_to_a_file_that_exists(page: Path):
    missing = [
        target
        for target in relative_links(page.read_text())
        if not (page.parent / target.split("#", 1)[0]).exists()
    ]
    assert missing == [], f"{page.relative_to(REPO)}: links to nothing: {missing}"


def test_every_guide_is_in_the_sites_navigation(tmp_path):
    config = docs.mkdocs_config(tmp_path / "site", ["01_chat"])
    sections = {name: entries for item in config["nav"] for name, entries in item.items()}
    assert "Notebooks" in sections and "Guides" in sections
    in_nav = [path for entry in sections["Guides"] for path in entry.values()]
    assert sorted(in_nav) == sorted(f"guides/{page.name}" for page in GUIDES)
    assert len(in_nav) == len(set(in_nav))
    # Each entry is titled with the page's own heading.
    for entry in sections["Guides"]:
        ((title, path),) = entry.items()
        heading = (REPO / "docs" / Path(path).name).read_text().splitlines()[0]
        assert heading.startswith("# ") and heading[2:].replace("`", "") == title


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_on_the_site_a_guide_links_to_guides_or_to_github(page: Path):
    """Staged into the site's guides/, a link to another guide stays relative; a link to any other
    file of the repository becomes its address on GitHub (it would lead nowhere on the site)."""
    staged = docs.guide_markdown(page)
    for target in relative_links(staged):
        assert "/" not in target and target.split("#", 1)[0].endswith(".md"), target
        assert (REPO / "docs" / target.split("#", 1)[0]).exists(), target
    leaving = [t for t in relative_links(page.read_text()) if t.startswith("../")]
    for target in leaving:
        path = target.split("#", 1)[0].removeprefix("../").rstrip("/")
        assert f"{paths.repository_url()}/blob/{paths.BRANCH}/{path}" in staged or (
            f"{paths.repository_url()}/tree/{paths.BRANCH}/{path}" in staged
        ), target


def test_a_widget_output_is_named_on_the_page_not_shown_as_its_python_repr(tmp_path):
    import json

    import nbformat

    run = tmp_path / "run"
    run.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("panel")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={docs.WIDGET_MIME: {"model_id": "x"}, "text/plain": "VBox(children=(HTML(..."},
        )
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 09 · A panel"), cell]
    nbformat.write(nb, run / "09_deploy_panel.ipynb")
    entry = {"notebook": "09_deploy_panel", "status": "passed", "engine": "sglang-cpu",
             "executed": str(run / "09_deploy_panel.ipynb")}  # fmt: skip
    (run / "summary.json").write_text(json.dumps({"notebooks": [entry]}))
    docs.stage(run, tmp_path / "site", tmp_path / "staging")
    staged = nbformat.read(tmp_path / "staging" / "src" / "notebooks" / "09_deploy_panel.ipynb", 4)
    (output,) = [o for c in staged.cells if c.cell_type == "code" for o in c.outputs]
    assert output["data"] == {"text/plain": docs.WIDGET_PLACEHOLDER}
