"""`cookbook upstream-check`, offline: the tests write SGLang's file format themselves, from our own
data (in upstream's layout: comments, unquoted keys, trailing commas, template literals), check
that the round trip finds nothing, then change one thing at a time and check that it is named."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cookbook_tools
from cookbook.bench import published
from cookbook.commands import verified_spec
from cookbook.recipes import load_recipes
from cookbook_tools import cli
from cookbook_tools.upstream_check import check
from cookbook_tools.upstream_jsx import UpstreamInputError, parse_export

REPO = Path(__file__).resolve().parent.parent


# ----- a writer of upstream's format ----------------------------------------------------------
class Template(str):
    """A string written as a template literal (backticks)."""


class Comment(str):
    """A `// comment` line inside an array or object."""


def js(value, indent: int = 0) -> str:
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, Comment):
        return str(value)
    if isinstance(value, Template):
        return "`" + value.replace("\\", "\\\\").replace("`", "\\`").replace("${", "\\${") + "`"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = [
            js(v, indent + 1) if isinstance(v, Comment) else f"{_key(k)}: {js(v, indent + 1)}"
            for k, v in value.items()
        ]
        flat = "{ " + ", ".join(items) + " }" if items else "{}"
        if not any("\n" in i or i.startswith("//") for i in items) and len(flat) < 100:
            return flat  # like upstream's one-line `match: { hw: "h100", ... }`
        return "{\n" + "".join(_line(inner, i) for i in items) + pad + "}"
    items = [js(v, indent + 1) for v in value]
    flat = "[" + ", ".join(items) + "]"
    if all(isinstance(v, int | float | None) for v in value) or (
        all(isinstance(v, str) for v in value) and len(flat) < 40  # supportedHardware, not flags
    ):
        return flat
    return "[\n" + "".join(_line(inner, i) for i in items) + pad + "]" if items else "[]"


def _line(pad: str, item: str) -> str:
    return f"{pad}{item}\n" if item.startswith("//") else f"{pad}{item},\n"  # trailing commas


def _key(key: str | int) -> str:
    if isinstance(key, int):  # upstream's `numPromptsByConc: { 1: 10, ... }`
        return str(key)
    return key if key.replace("_", "a").isalnum() and not key[0].isdigit() else json.dumps(key)


def upstream_files(page_id: str) -> tuple[dict, list]:
    """Our data for one page as upstream's `config` and `benchmarks`, read through the library."""
    recipes, card = load_recipes(), published()["sglang_cookbook_card"]
    page, deploy = recipes.pages[page_id], recipes.deploy
    variants = [m for m in recipes.variants if recipes.models[m].page == page_id]
    hws = [hw for hw, row in deploy.cells.items() if any(v in row for v in variants)]

    def up(m: str) -> str:
        return page.upstream_variants.get(m, m)

    def match(hw: str, m: str) -> dict:
        return {"hw": hw, "variant": up(m), "quant": deploy.quant, "strategy": deploy.strategy,
                "nodes": deploy.nodes}  # fmt: skip

    features = {"attention": {"knobs": [{"id": "tp", "label": "TP", "values": page.tp_values}]}}
    if page.parser_toggles:
        features["parsers"] = {"items": [{"id": k, "label": t.label, "flag": t.flag}
                                         for k, t in page.parser_toggles.items()]}  # fmt: skip
    cells = []
    for hw in hws:
        cells.append(Comment(f"// {hw.upper()}"))
        for m in variants:
            spec = verified_spec(hw, m, recipes)
            cells.append({"match": match(hw, m), "verified": True, "env": list(spec.env),
                          "flags": list(spec.flags)})  # fmt: skip
    config = {
        "modelName": page_id.upper(),
        "//": Comment("// TTFT/TPOT as recorded"),
        "latencyPercentile": page.latency_statistic,
        "supportedHardware": hws,
        "variants": [{"id": up(m), "label": m, "subtitle": "·"} for m in variants],
        "quantizations": [{"id": deploy.quant, "label": "BF16"}],
        "modelNames": {f"{up(m)}|{deploy.quant}": recipes.models[m].hf_id for m in variants},
        "curl": Template(page.curl_check),
        "benchmarkCommands": {"numPromptsByConc": {1: 10, 100: 1000}},
        "dockerImages": dict.fromkeys(hws, page.docker_image),
        "github": {"cookbookModel": page.cookbook_model},
        "playgroundFeatures": features,
        "cells": cells,
    }
    accuracy = {
        up(m): {f"{k}_pct": v for k, v in card["accuracy_pct"][m].items()}
        for m in variants
        if m in card["accuracy_pct"]
    }
    if accuracy:  # the VL-3B page has none: its accuracy is per cell, in the benchmarks
        config["defaultAccuracy"] = accuracy
    benchmarks = []
    for hw in hws:
        for m in variants:
            if m not in card.get(hw, {}):
                continue
            entry = {"match": match(hw, m),
                     "sglang_version": card["measured_with"][page_id][hw], "speed": []}  # fmt: skip
            for w, (ttft, tpot, tok_s) in zip(card["workloads"].values(), card[hw][m], strict=True):
                workload = {"dataset": "random", **w}
                entry["speed"].append({"workload": workload, "ttft_ms": ttft, "tpot_ms": tpot,
                                       "tokens_per_sec_per_gpu": tok_s})  # fmt: skip
            accuracy = card["accuracy_pct_by_hw"].get(m, {}).get(hw)
            if accuracy:
                entry["accuracy"] = {f"{k}_pct": v for k, v in accuracy.items()}
            benchmarks.append(entry)
    return config, benchmarks


def write(folder: Path, pages: dict[str, tuple[dict, list]]) -> Path:
    recipes = load_recipes()
    for page_id, (config, benchmarks) in pages.items():
        page = recipes.pages[page_id]
        (folder / Path(page.config).name).write_text(
            f"// {page_id}: written by the test.\n\nexport const config = {js(config)};\n"
        )
        (folder / Path(page.benchmarks).name).write_text(
            f"// One entry per cell.\n\nexport const benchmarks = {js(benchmarks)};\n"
        )
    return folder


@pytest.fixture(scope="module")
def ours() -> dict[str, tuple[dict, list]]:
    return {page_id: upstream_files(page_id) for page_id in load_recipes().pages}


def differences(tmp_path: Path, ours: dict, change=None) -> list[tuple[str, str, str]]:
    pages = copy.deepcopy(ours)
    if change:
        change(pages)
    found = check(str(write(tmp_path, pages)))
    return [(d.page, d.where, d.field) for d in found]


def cell(pages: dict, page: str, hw: str, variant: str, *, bench: bool = False) -> dict:
    entries = pages[page][1] if bench else pages[page][0]["cells"]
    return next(c for c in entries if isinstance(c, dict) and c["match"]["hw"] == hw
                and c["match"]["variant"] == variant)  # fmt: skip


# ----- the round trip and each change ---------------------------------------------------------
def test_the_round_trip_finds_nothing(tmp_path, ours):
    assert differences(tmp_path, ours) == []


def test_the_writer_writes_upstreams_format(tmp_path, ours):
    text = (write(tmp_path, ours) / "lfm2.5-vl-3b.jsx").read_text()
    assert "export const config = {" in text and "// H100" in text
    assert 'match: { hw: "h100", variant: "default", quant: "bf16"' in text
    assert "],\n" in text and "curl: `curl http://" in text and "\\\\\n-H" in text


def _flag_changed(p):
    flags = cell(p, "lfm2.5", "h100", "instruct")["flags"]
    flags[flags.index("--tool-call-parser lfm2")] = "--tool-call-parser pythonic"


def _flags_reordered(p):
    flags = cell(p, "lfm2.5", "b200", "vl-450m")["flags"]
    flags[4], flags[5] = flags[5], flags[4]


def _env_removed(p):
    cell(p, "lfm2.5", "h200", "vl")["env"].pop(0)


def _cell_added(p):
    new = copy.deepcopy(cell(p, "lfm2.5", "h100", "instruct"))
    new["match"]["quant"] = "fp8"
    p["lfm2.5"][0]["cells"].append(new)


def _cell_removed(p):
    p["lfm2.5"][0]["cells"].remove(cell(p, "lfm2.5", "b200", "jp"))


def _hardware_added(p):
    config = p["lfm2.5-vl-3b"][0]
    config["supportedHardware"].append("b300")
    config["dockerImages"]["b300"] = config["dockerImages"]["b200"]
    new = copy.deepcopy(cell(p, "lfm2.5-vl-3b", "b200", "default"))
    new["match"]["hw"] = "b300"
    config["cells"].append(new)


def _variant_renamed(p):
    config, benchmarks = p["lfm2.5-vl-3b"]
    config["variants"][0]["id"] = "3b"
    config["modelNames"] = {"3b|bf16": config["modelNames"].pop("default|bf16")}
    for entry in [*config["cells"], *benchmarks]:
        if isinstance(entry, dict):
            entry["match"]["variant"] = "3b"


def _docker_image_changed(p):
    p["lfm2.5-vl-3b"][0]["dockerImages"]["h200"] = "lmsysorg/sglang:v0.6.0"


def _tp_knob_changed(p):
    p["lfm2.5"][0]["playgroundFeatures"]["attention"]["knobs"][0]["values"] = [None, 1, 2, 4]


def _parser_toggle_changed(p):
    items = p["lfm2.5-vl-3b"][0]["playgroundFeatures"]["parsers"]["items"]
    items[0]["flag"] = "--tool-call-parser pythonic"


def _parser_toggle_added(p):
    p["lfm2.5"][0]["playgroundFeatures"]["parsers"] = {
        "items": [
            {"id": "reasoning", "label": "Reasoning Parser", "flag": "--reasoning-parser qwen3"}
        ]
    }


def _number_changed(p):
    cell(p, "lfm2.5", "h100", "instruct", bench=True)["speed"][1]["ttft_ms"] = 200.5


def _accuracy_changed(p):
    p["lfm2.5"][0]["defaultAccuracy"]["8b-a1b"]["mmlu_pct"] = 77.0


def _cell_accuracy_changed(p):
    cell(p, "lfm2.5-vl-3b", "h100", "default", bench=True)["accuracy"]["docvqa_pct"] = 91.0


def _latency_percentile_changed(p):
    p["lfm2.5"][0]["latencyPercentile"] = "P50"


def _sglang_version_changed(p):
    cell(p, "lfm2.5", "b200", "vl", bench=True)["sglang_version"] = "0.5.24"


def _model_id_changed(p):
    p["lfm2.5"][0]["modelNames"]["jp|bf16"] = "LiquidAI/LFM2.5-1.2B-JP-202609"


def _not_verified(p):
    cell(p, "lfm2.5", "h200", "350m")["verified"] = False


@pytest.mark.parametrize("change, expected", [
    (_flag_changed, [("lfm2.5", "h100/instruct", "flags")]),
    (_flags_reordered, [("lfm2.5", "b200/vl-450m", "flags")]),
    (_env_removed, [("lfm2.5", "h200/vl", "env")]),
    (_cell_added, [("lfm2.5", "h100/instruct (fp8, default, single)", "cell")]),
    (_cell_removed, [("lfm2.5", "b200/jp", "cell")]),
    (_hardware_added, [("lfm2.5-vl-3b", "page", "supportedHardware"),
                       ("lfm2.5-vl-3b", "b300", "dockerImages"),
                       ("lfm2.5-vl-3b", "b300/vl-3b", "cell")]),
    (_variant_renamed, [("lfm2.5-vl-3b", "vl-3b", "variant id")]),
    (_docker_image_changed, [("lfm2.5-vl-3b", "h200", "dockerImages")]),
    (_tp_knob_changed, [("lfm2.5", "page", "tp knob")]),
    (_parser_toggle_changed, [("lfm2.5-vl-3b", "toolCall", "parser toggle flag")]),
    (_parser_toggle_added, [("lfm2.5", "reasoning", "parser toggle")]),
    (_number_changed, [("lfm2.5", "h100/instruct", "speed 1024/1024 c=100 ttft_ms")]),
    (_accuracy_changed, [("lfm2.5", "8b-a1b", "defaultAccuracy mmlu_pct")]),
    (_cell_accuracy_changed, [("lfm2.5-vl-3b", "h100/vl-3b", "accuracy docvqa_pct")]),
    (_latency_percentile_changed, [("lfm2.5", "page", "latencyPercentile")]),
    (_sglang_version_changed, [("lfm2.5", "b200/vl", "sglang_version")]),
    (_model_id_changed, [("lfm2.5", "jp", "modelNames")]),
    (_not_verified, [("lfm2.5", "h200/350m", "verified")]),
])  # fmt: skip
def test_each_change_is_named(tmp_path, ours, change, expected):
    assert differences(tmp_path, ours, change) == expected


def test_the_report_says_what_moved_where(tmp_path, ours, capsys):
    pages = copy.deepcopy(ours)
    for change in (_flag_changed, _flags_reordered, _env_removed, _variant_renamed):
        change(pages)
    write(tmp_path, pages)
    assert cli.main(["upstream-check", "--source", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "lfm2.5 h100/instruct flags: ours has '--tool-call-parser lfm2' at 4, theirs "
        "'--tool-call-parser pythonic'",
        "lfm2.5 h200/vl env: ours has 'SGLANG_USE_CUDA_IPC_TRANSPORT=1' at 1, theirs lacks it",
        "lfm2.5 b200/vl-450m flags: same items in another order: '--mm-attention-backend fa4' at "
        "5 in ours, 6 in theirs; '--tool-call-parser lfm2' at 6 in ours, 5 in theirs",
        "lfm2.5-vl-3b vl-3b variant id: renamed: theirs is now '3b', ours expects 'default' "
        "(same model id)",
        f"4 differences between data/ and {tmp_path}",
    ]


def test_json_lists_the_same_differences(tmp_path, ours, capsys):
    pages = copy.deepcopy(ours)
    _flag_changed(pages)
    write(tmp_path, pages)
    assert cli.main(["upstream-check", "--source", str(tmp_path), "--json"]) == 1
    [only] = json.loads(capsys.readouterr().out)
    assert only["page"] == "lfm2.5" and only["where"] == "h100/instruct"
    assert only["field"] == "flags" and "--tool-call-parser pythonic" in only["theirs"]
    assert only["ours"][3] == "--tool-call-parser lfm2" and only["detail"]


def test_a_checkout_of_sglang_is_a_source_too(tmp_path, ours):
    nested = tmp_path / Path(load_recipes().pages["lfm2.5"].config).parent
    nested.mkdir(parents=True)
    write(nested, ours)
    assert check(str(tmp_path)) == []


# ----- bad input: exit 2, naming the file -----------------------------------------------------
@pytest.mark.parametrize("bad, what", [
    ("  extra: { ...defaults },\n", "spread element `...defaults`"),
    ("  extra: makeCells(1),\n", "call expression `makeCells(1)`"),
    ("  extra: `a ${x} b`,\n", "a template with a substitution"),
    ("  extra: [1, 2,,\n", "syntax error"),
])  # fmt: skip
def test_a_file_that_is_not_literal_data_exits_2_naming_file_and_line(tmp_path, ours, capsys,
                                                                     bad, what):  # fmt: skip
    write(tmp_path, ours)
    path = tmp_path / "lfm2.5-vl-3b.jsx"
    lines = path.read_text().splitlines(keepends=True)
    at = lines.index("export const config = {\n") + 1
    path.write_text("".join([*lines[: at + 1], bad, *lines[at + 1 :]]))
    assert cli.main(["upstream-check", "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cookbook upstream-check: error: {path}, line ")
    assert what in err, err
    if what != "syntax error":
        assert f"{path}, line {at + 2}:" in err


def test_a_missing_file_exits_2(tmp_path, ours, capsys):
    write(tmp_path, ours)
    (tmp_path / "lfm2.5-benchmarks.jsx").unlink()
    assert cli.main(["upstream-check", "--source", str(tmp_path)]) == 2
    assert "lfm2.5-benchmarks.jsx: no such file" in capsys.readouterr().err


def test_a_source_that_is_neither_folder_nor_url_exits_2(tmp_path, capsys):
    assert cli.main(["upstream-check", "--source", str(tmp_path / "nowhere")]) == 2
    assert "not a folder or an http(s) URL" in capsys.readouterr().err


def test_an_unreachable_url_exits_2(capsys):
    assert cli.main(["upstream-check", "--source", "http://127.0.0.1:9/sglang"]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/sglang/docs/src/snippets/configs/LiquidAI/lfm2.5.jsx" in err
    assert "cannot fetch it" in err


def test_another_export_exits_2(tmp_path, ours, capsys):
    write(tmp_path, ours)
    (tmp_path / "lfm2.5.jsx").write_text("export const cells = [];\n")
    assert cli.main(["upstream-check", "--source", str(tmp_path)]) == 2
    assert "expected `export const config` (dict)" in capsys.readouterr().err


# ----- the parser itself ----------------------------------------------------------------------
def test_the_parser_reads_javascripts_literals():
    text = r"""
    // a comment
    export const config = {
      plain: "a\"b\n\u00e9", 'single': 'it\'s', "quoted-key": `line1
line2 \\ end`, /* block */ 1: 0x10, n: [-1, +2.5, 1e3, 1_000, null, true, false,],
      nested: { deep: [{}, []], },
    };
    """
    assert parse_export(text, "x.jsx") == ("config", {
        "plain": 'a"b\né', "single": "it's", "quoted-key": "line1\nline2 \\ end", "1": 16,
        "n": [-1, 2.5, 1000.0, 1000, None, True, False], "nested": {"deep": [{}, []]},
    })  # fmt: skip


@pytest.mark.parametrize("text, line", [
    ("export const config = {\n  a: b,\n};", 2),
    ("export const config = {\n  a: 1,\n  b: -\"x\",\n};", 3),
    ("export const config = {\n  a() { return 1 },\n};", 2),
    ("export const config = {\n  a,\n};", 2),
])  # fmt: skip
def test_the_parser_names_the_line_of_anything_but_a_literal(text, line):
    with pytest.raises(UpstreamInputError, match=rf"^x\.jsx, line {line}: "):
        parse_export(text, "x.jsx")


# ----- the installed command ------------------------------------------------------------------
def test_the_command_end_to_end(tmp_path, ours, cookbook_exe):
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, however it is installed
    run = [cookbook_exe, "upstream-check", "--source", str(write(tmp_path, ours))]
    out = subprocess.run(run, capture_output=True, text=True, timeout=120, env=env)
    assert (out.returncode, out.stdout, out.stderr) == (
        0, f"0 differences between data/ and {tmp_path}\n", ""
    )  # fmt: skip
    pages = copy.deepcopy(ours)
    _number_changed(pages)
    write(tmp_path, pages)
    out = subprocess.run(run, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "lfm2.5 h100/instruct speed 1024/1024 c=100 ttft_ms: ours 180.55, theirs 200.5",
        f"1 difference between data/ and {tmp_path}",
    ]


def test_without_the_parser_installed_it_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tree_sitter", None)  # `import tree_sitter` now fails
    for name in ("cookbook_tools.upstream_check", "cookbook_tools.upstream_jsx"):
        monkeypatch.delitem(sys.modules, name)
        monkeypatch.delattr(cookbook_tools, name.rpartition(".")[2])
    assert cli.main(["upstream-check", "--source", "."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cookbook upstream-check: error: tree_sitter is not installed")
    assert "bash ci/setup.sh main" in err
