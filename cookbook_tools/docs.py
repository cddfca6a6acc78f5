"""`cookbook docs`: the rendered site, built from an executed run's notebooks with their outputs.

MkDocs Material with mkdocs-jupyter (`execute: false`: the site shows what the run produced, it
never re-runs anything). Chosen over Sphinx + myst-nb + a book theme because one pip-installed
theme brings the copy buttons, the offline search and the navigation, with one config file; both
build with no network. Every notebook page gets a provenance banner from the run's summary.json
(engine, model, hardware, date), and pages whose outputs come from a CPU fixture say so first.
The guides (docs/*.md, also read on GitHub) follow the notebooks in the navigation.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import yaml

from cookbook import commands, paths
from cookbook.errors import CookbookError
from cookbook.paths import REPO_ROOT
from cookbook.recipes import load_recipes

DEFAULT_RUN = REPO_ROOT / "runs" / "latest"
DEFAULT_SITE = REPO_ROOT / "site"
STAGING = REPO_ROOT / "build" / "docs"
# The guides: Markdown pages in docs/, readable on GitHub and staged as the site's "Guides".
GUIDES_DIR = REPO_ROOT / "docs"
# Their order in the navigation; a page not named here follows these, by file name.
GUIDE_ORDER = ("notebooks", "engines", "environments", "cli", "benchmarks", "ci",
               "troubleshooting", "upstream-findings")  # fmt: skip
SITE_NAME = "LFM2.5 on SGLang: a notebook cookbook"
BUILD_TIMEOUT_S = 600

CSS = """
.provenance { border-left: 4px solid #2e7d32; background: #f1f8e9; padding: .6em 1em;
  margin: 0 0 1.2em 0; font-size: .8rem; }
.provenance.fixture { border-left-color: #e65100; background: #fff3e0; }
.provenance .warning { font-weight: 700; color: #bf360c; font-size: .9rem; }
.provenance a { margin-right: 1.2em; }
"""
# The site is self-contained: a local badge in place of Colab's (an image from the internet would
# not load offline), and no MathJax (no notebook has math; mkdocs-jupyter's default loads "").
COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDER = (
    "[an interactive widget: it needs a running kernel, so this page cannot show it; open the "
    "notebook in JupyterLab or Colab to use it]"
)
BADGE_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img"
 aria-label="Open in Colab"><rect width="117" height="20" rx="3" fill="#555"/>
<rect x="42" width="75" height="20" rx="3" fill="#f9ab00"/><g fill="#fff"
 font-family="Verdana,sans-serif" font-size="11"><text x="6" y="14">Open</text>
<text x="47" y="14">in Colab</text></g></svg>"""


class DocsError(CookbookError, RuntimeError):
    """The site cannot be built from what is there (no run, a failed build): says what to do."""


def load_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise DocsError(f"no executed run in {run_dir} (no summary.json): run `make run` first")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DocsError(f"{path} is not valid JSON: {exc}") from None


def is_fixture(entry: dict[str, Any]) -> bool:
    return str(entry.get("engine") or "").endswith("-cpu") or str(
        entry.get("model") or ""
    ).startswith("fixture/")


def provenance_html(entry: dict[str, Any], summary: dict[str, Any]) -> str:
    """The banner at the top of a notebook page: what produced the outputs below it."""
    name = f"{entry['notebook']}.ipynb"
    facts = [
        ("engine", entry.get("engine") or summary.get("engine") or "?"),
        ("model", entry.get("model") or "?"),
        ("hardware", summary.get("hardware") or "?"),
        ("machine", summary.get("machine") or "?"),
        ("date", summary.get("started_at") or "?"),
        ("status", f"{entry.get('status')} in {entry.get('seconds')} s"),
        ("commit", summary.get("commit") or "?"),
    ]
    fixture = is_fixture(entry)
    lines = [f'<div class="provenance{" fixture" if fixture else ""}" id="provenance">']
    if fixture:
        served_by = summary.get("engine_label") or "a CPU engine serving a fixture"
        lines.append(
            f'<p class="warning">These outputs come from {html.escape(served_by)} The fixture is '
            "a tiny model this project trains to exercise the serving path, not LFM2.5: its "
            "answers mean nothing; run the notebook on a GPU for LFM2.5's.</p>"
        )
    lines.append(
        "<p>Outputs produced by "
        + "; ".join(f"<b>{k}</b> {html.escape(str(v))}" for k, v in facts)
        + ".</p>"
    )
    lines.append(
        f'<p><a href="{paths.colab_url(name)}">Open in Colab</a>'
        f'<a href="../downloads/{name}" download>Download this notebook (with outputs)</a></p>'
    )
    lines.append("</div>")
    return "\n".join(lines)


def readme_opening() -> str:
    """The README up to its first section: the landing page's introduction."""
    text = (REPO_ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    return head.replace("](data/", f"]({paths.repository_file_url('data/')}")


def guide_pages(guides_dir: Path = GUIDES_DIR) -> list[tuple[str, str]]:
    """The guides in navigation order, as (file stem, title from the page's first heading)."""
    rank = {stem: i for i, stem in enumerate(GUIDE_ORDER)}
    found = sorted(
        Path(guides_dir).glob("*.md"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem)
    )
    out = []
    for path in found:
        heading = next(
            (line[2:].strip() for line in path.read_text().splitlines() if line.startswith("# ")),
            path.stem,
        )
        out.append((path.stem, heading.replace("`", "")))
    return out


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def guide_markdown(path: Path, guides_dir: Path = GUIDES_DIR) -> str:
    """A guide as the site shows it: a link to another guide stays relative (MkDocs turns it
    into the page's address); a link to any other file of the repository (`../data/...`, the
    README) points to that file on GitHub, where it works from the site too."""
    guides_dir = Path(guides_dir).resolve()

    def rewrite(match: re.Match) -> str:
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):  # a URL, or an anchor on this page
            return match.group(0)
        file_part, _, anchor = target.partition("#")
        resolved = (Path(path).resolve().parent / file_part).resolve()
        if resolved.parent == guides_dir and resolved.suffix == ".md":
            return match.group(0)
        try:
            relative = resolved.relative_to(REPO_ROOT).as_posix()
        except ValueError:
            return match.group(0)
        url = paths.repository_file_url(relative, folder=resolved.is_dir())
        return f"]({url}{'#' + anchor if anchor else ''})"

    # Code blocks are shown as written: only the prose between the fences is rewritten.
    parts = re.split(r"(^```.*?^```[^\n]*$)", Path(path).read_text(), flags=re.M | re.S)
    return "".join(p if p.startswith("```") else _LINK.sub(rewrite, p) for p in parts)


def index_page(summary: dict[str, Any], pages: list[tuple[str, dict[str, Any]]]) -> str:
    rows = [
        f"| [{stem}](notebooks/{stem}.ipynb) | {entry.get('status')} | {entry.get('engine')} | "
        f"`{entry.get('model')}` |"
        for stem, entry in pages
    ]
    fixture = any(is_fixture(entry) for _, entry in pages)
    listed = ", ".join(f"[{title}](guides/{stem}.md)" for stem, title in guide_pages())
    guides = f"\n## Guides\n\n{listed}.\n" if listed else ""
    served_by = summary.get("engine_label") or "a CPU engine serving the project's fixtures."
    note = (
        f'\n!!! warning "CPU fixture run"\n    The outputs on these pages come from {served_by} '
        "The fixture models are **not LFM2.5**.\n"
        if fixture
        else ""
    )
    return (
        f"{readme_opening()}\n\n## The notebooks\n\n"
        f"Rendered from the run of {summary.get('started_at', '?')} on "
        f"{summary.get('hardware', '?')} ({summary.get('machine', '?')}).\n{note}\n"
        "| notebook | status | engine | model |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\nAlso here: [the verified matrix](matrix.md) and "
        "[the published benchmark numbers](benchmarks.md). The source, with the stripped "
        f"notebooks: [{paths.github_slug()}]({paths.repository_url()}).\n" + guides
    )


def matrix_page() -> str:
    recipes = load_recipes()
    cells = sum(len(row) for row in recipes.deploy.cells.values())
    out = [
        "# The verified matrix",
        "",
        f"Generated from `data/recipes.yaml`: the {cells} "
        "cells of SGLang's LiquidAI Deploy panels (the LFM2.5 page and the LFM2.5-VL-3B page), "
        "each run end-to-end upstream (bf16, TP=1, single node).",
        "",
        "| GPU | variant | model | page | Docker image | badge | cell flags |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for hw in recipes.verified_hardware:
        for variant in recipes.variants:
            spec = commands.launch_spec(hw, variant)
            page = recipes.models[variant].page
            image = recipes.pages[page].docker_image
            flags = " ".join(f"`{f}`" for f in recipes.deploy.cells[hw][variant])
            row = f"| {hw} | {variant} | {spec.model} | {page} | `{image}` | ✔ Verified | {flags} |"
            out.append(row)
    toggles = [
        f"`{f}` ({m})"
        for m in recipes.variants
        for f in commands.parser_toggles(m, recipes).values()
    ]
    if toggles:
        out += [
            "",
            "Playground parser toggles (Not Verified when on): "
            + ", ".join(sorted(set(toggles)))
            + ".",
        ]
    out += [
        "",
        "## Derived recipes (Not Verified)",
        "",
        "GPUs outside the matrix get the nearest verified cell where the data's rules say it can "
        "start; nobody has run these end-to-end.",
        "",
        "| GPU | derived from | attention backend | badge |",
        "| --- | --- | --- | --- |",
    ]
    for hw_id, hw in recipes.hardware.items():
        if hw.status == "derived":
            spec = commands.launch_spec(hw_id, "instruct")
            backend = commands.attention_backend(hw_id, spec.flags, recipes)
            out.append(f"| {hw.name} | {hw.derive_from} | {backend} | ⚠ Not Verified |")
    out += ["", "## Unsupported", ""]
    for _hw_id, hw in recipes.hardware.items():
        if not hw.supported:
            evidence = "; ".join(hw.evidence)
            out.append(f"- **{hw.name}**: {hw.unsupported} *Evidence:* {evidence}")
    return "\n".join(out) + "\n"


def benchmarks_page() -> str:
    from cookbook import bench

    data = bench.published()
    card = data["sglang_cookbook_card"]
    out = [
        "# Published benchmark numbers",
        "",
        "Quoted from their sources (`data/published-benchmarks.yaml`), never produced here.",
        "",
        "## SGLang cookbook performance card (`sglang.bench_serving`, 1024 in / 1024 out)",
        "",
        f"TTFT and TPOT are {bench.card_statistic()};"
        " tok/s per GPU counts input and output tokens.",
        "",
        "| GPU | variant | latency TTFT ms | latency TPOT ms | latency tok/s | "
        "throughput TTFT ms | throughput TPOT ms | throughput tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    recipes = load_recipes()
    for hw, cells in card.items():
        if hw not in recipes.hardware:
            continue  # the workloads, accuracy and build entries
        for variant, (lat, thr) in cells.items():
            out.append(f"| {hw} | {variant} | " + " | ".join(str(v) for v in (*lat, *thr)) + " |")
    accuracy = card.get("accuracy_pct", {})
    if accuracy:
        names = sorted({k for row in accuracy.values() for k in row})
        out += [
            "",
            "Accuracy (%), as published, measured through SGLang on B200:",
            "",
            "| variant | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names),
        ]
        for variant, row in accuracy.items():
            out.append(f"| {variant} | " + " | ".join(str(row.get(n, "")) for n in names) + " |")
    for variant, by_hw in card.get("accuracy_pct_by_hw", {}).items():
        out += ["", f"Accuracy (%) of {variant}, as its own page publishes it, per GPU:", ""]
        out += [
            f"- {hw}: " + ", ".join(f"{k} {v}" for k, v in row.items()) for hw, row in by_hw.items()
        ]
    built = card.get("measured_with", {})
    if built:
        out += ["", "SGLang builds behind these numbers, per page and GPU:", ""]
        for page, by_hw in built.items():
            out.append(f"- {page}: " + "; ".join(f"{hw} `{v}`" for hw, v in by_hw.items()))
    seed = data["seed_004"]
    out += [
        "",
        "## The Lambda guide (LFM2.5-8B-A1B, 8192 in / 2048 out, 512 prompts, 32 at once)",
        "",
        f"Measured with `{seed['tool']}`. The guide prints two tables and does not say which "
        "engine produced which; they follow its launch commands' order (SGLang, then vLLM), "
        "which is a reading, not the guide's statement.",
        "",
    ]
    for table in ("table_1", "table_2"):
        out += [
            f"### {table}",
            "",
            "| GPU | " + " | ".join(next(iter(seed[table].values()))) + " |",
        ]
        out.append("| --- |" + " --- |" * len(next(iter(seed[table].values()))))
        for hw, row in seed[table].items():
            out.append(f"| {hw} | " + " | ".join(str(v) for v in row.values()) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def mkdocs_config(
    site_dir: Path, pages: list[str], guides: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The MkDocs configuration: `pages` are the notebooks' stems, `guides` the (stem, title)
    of the pages of docs/ (default: all of them)."""
    guides = guide_pages() if guides is None else guides
    return {
        "site_name": SITE_NAME,
        "site_url": "",
        # No repo_url: the theme would ask GitHub's API for the repository's facts from every
        # reader's browser (and fail offline); the landing page links the repository instead.
        "docs_dir": "src",
        "site_dir": str(site_dir),
        "use_directory_urls": False,
        "theme": {
            "name": "material",
            "font": False,  # no Google Fonts: the site works offline
            "features": ["content.code.copy", "navigation.sections", "search.highlight"],
        },
        "plugins": [
            "search",
            {
                "mkdocs-jupyter": {
                    "execute": False,
                    "include_source": True,
                    "custom_mathjax_url": "../no-mathjax.js",
                }
            },
        ],
        "markdown_extensions": ["tables", "admonition", "attr_list", "md_in_html"],
        "extra_css": ["provenance.css"],
        "nav": [
            {"Home": "index.md"},
            {"Notebooks": [{stem: f"notebooks/{stem}.ipynb"} for stem in pages]},
            *(
                [{"Guides": [{title: f"guides/{stem}.md"} for stem, title in guides]}]
                if guides
                else []
            ),
            {"Verified matrix": "matrix.md"},
            {"Published benchmarks": "benchmarks.md"},
        ],
    }


def stage(run_dir: Path, site_dir: Path, staging: Path = STAGING) -> dict[str, Path]:
    """Write the site's sources (pages, notebooks with banners, config) into `staging`; returns
    the executed notebooks it used, by file name."""
    summary = load_summary(run_dir)
    if staging.exists():
        shutil.rmtree(staging)  # made by this function only
    src = staging / "src"
    (src / "notebooks").mkdir(parents=True)
    pages: list[tuple[str, dict[str, Any]]] = []
    used: dict[str, Path] = {}
    for entry in summary.get("notebooks", []):
        executed = Path(entry.get("executed") or "")
        if not executed.is_absolute():
            executed = Path(run_dir) / executed.name
        if not executed.is_file():
            executed = Path(run_dir) / f"{entry['notebook']}.ipynb"
        if not executed.is_file():
            continue
        nb = nbformat.read(executed, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = cell.source.replace(COLAB_BADGE_URL, "../colab-badge.svg")
            # Live widgets (progress bars, the Deploy panel) need a kernel, and their renderer
            # would be fetched from a CDN; their text form is a Python repr ("VBox(children=...").
            # The page says what is there instead.
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if data.pop(WIDGET_MIME, None) is not None:
                    data.pop("text/html", None)
                    data["text/plain"] = WIDGET_PLACEHOLDER
        nb.metadata.pop("widgets", None)
        banner = nbformat.v4.new_markdown_cell(provenance_html(entry, summary))
        banner["id"] = "provenance"
        nb.cells.insert(1, banner)
        nbformat.write(nb, src / "notebooks" / executed.name)
        pages.append((entry["notebook"], entry))
        used[executed.name] = executed
    if not pages:
        raise DocsError(f"{run_dir}/summary.json lists no executed notebook that is there")
    guides = guide_pages()
    (src / "guides").mkdir()
    for stem, _title in guides:
        (src / "guides" / f"{stem}.md").write_text(guide_markdown(GUIDES_DIR / f"{stem}.md"))
    (src / "index.md").write_text(index_page(summary, pages))
    (src / "matrix.md").write_text(matrix_page())
    (src / "benchmarks.md").write_text(benchmarks_page())
    (src / "provenance.css").write_text(CSS)
    (src / "colab-badge.svg").write_text(BADGE_SVG)
    (src / "no-mathjax.js").write_text("// no math on these pages\n")
    config = mkdocs_config(Path(site_dir).resolve(), [stem for stem, _ in pages], guides)
    (staging / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return used


def mkdocs_executable() -> str:
    exe = Path(sys.executable).parent / "mkdocs"
    found = str(exe) if exe.exists() else shutil.which("mkdocs")
    if not found:
        raise DocsError("mkdocs is not installed here: `bash ci/setup.sh main` installs it")
    return found


def build(run_dir: Path = DEFAULT_RUN, site_dir: Path = DEFAULT_SITE, echo=print) -> Path:
    """Build the site into `site_dir` from the executed notebooks in `run_dir`."""
    run_dir, site_dir = Path(run_dir).resolve(), Path(site_dir).resolve()
    used = stage(run_dir, site_dir, STAGING)
    staging = STAGING
    echo(f"[docs] building {site_dir} from {run_dir}")
    done = subprocess.run(
        [mkdocs_executable(), "build", "--clean", "-f", str(staging / "mkdocs.yml")],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=staging,
    )  # fmt: skip
    if done.returncode != 0:
        raise DocsError(f"mkdocs build failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    downloads = site_dir / "downloads"
    downloads.mkdir(exist_ok=True)
    for name, executed in used.items():  # the executed notebooks, as the run left them
        shutil.copy2(executed, downloads / name)
    echo(f"[docs] {sum(1 for _ in site_dir.rglob('*.html'))} pages in {site_dir}")
    return site_dir


def run_summary_markdown(run_dir: Path) -> str:
    """A run as Markdown (for $GITHUB_STEP_SUMMARY): the notebook table, then the benchmark
    notebook's figures beside the SGLang card's for the same GPU and variant."""
    from cookbook import bench

    summary = load_summary(run_dir)
    out = [
        f"### {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed "
        f"in {summary.get('seconds')} s on {summary.get('hardware', '?')} "
        f"({summary.get('engine', '?')} engine, {summary.get('started_at', '?')})",
        "",
        "| notebook | status | seconds | start-up s | engine | model |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in summary.get("notebooks", []):
        out.append(
            f"| {n['notebook']} | {n['status']} | {n['seconds']} | {n.get('startup_s') or '-'} | "
            f"{n.get('engine') or '-'} | `{n.get('model') or '-'}` |"
        )
    failed = [n for n in summary.get("notebooks", []) if n["status"] != "passed"]
    for n in failed:
        out += ["", f"<details><summary>{n['notebook']} failed</summary>", "",
                "```", (n.get("error") or "")[-2000:], "```", "</details>"]  # fmt: skip
    bench_run = next(
        (n for n in summary.get("notebooks", []) if n["results"].get("card_workloads")), None
    )
    if bench_run is not None:
        results = bench_run["results"]
        hw, variant = results.get("card_hw"), bench_run.get("variant")
        card = bench.published_card(hw, variant) if hw and variant else None
        out += ["", f"### Benchmark: {variant} on {bench_run.get('engine')}, "
                f"scale {results.get('scale')}", ""]  # fmt: skip
        if card is None:
            out.append(f"No published card cell for {variant} on {hw}.")
        else:
            comparable = bench_run.get("engine") == "sglang" and results.get("scale") == "gpu"
            out += [
                f"Published: SGLang cookbook card, {hw} / {variant}"
                + ("" if comparable else " (**not comparable**: not SGLang at GPU scale)"),
                "",
                "| workload | metric | published | ours |",
                "| --- | --- | --- | --- |",
            ]
            for workload, mine in results["card_workloads"].items():
                for row in bench.card_comparison(mine, card[workload]):
                    ours = ", ".join(
                        f"{k.removeprefix('ours_') if k != 'ours' else 'value'} {v:.2f}"
                        for k, v in row.items()
                        if k.startswith("ours") and v is not None
                    )
                    out.append(f"| {workload} | {row['metric']} | {row['published']} | {ours} |")
    return "\n".join(out) + "\n"
