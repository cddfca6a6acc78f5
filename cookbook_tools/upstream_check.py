"""`cookbook upstream-check`: compares data/ with SGLang's own cookbook data for LiquidAI (the
config and benchmark files each page of `pages:` in data/recipes.yaml names), and lists every
difference: cells, flags and env (in order), variants, model ids, Docker images, Playground
knobs, the published numbers, accuracies and SGLang builds.

Ours is read only through the library (cookbook.recipes, cookbook.commands.verified_spec,
cookbook.bench.published); theirs through upstream_jsx, a real JavaScript parser. Both sides are
first put in one shape (`_ours`, `_theirs`: upstream's field names, our model ids), then
compared field by field."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from cookbook.bench import published
from cookbook.commands import verified_spec
from cookbook.recipes import Recipes, load_recipes
from cookbook_tools.upstream_jsx import UpstreamInputError, parse_export

# Where the files live upstream: each page's `config` and `benchmarks` path is appended.
UPSTREAM_RAW = "https://raw.githubusercontent.com/sgl-project/sglang/main"
TIMEOUT_S = 30.0
METRICS = ("ttft_ms", "tpot_ms", "tokens_per_sec_per_gpu")  # the card's three, in our order


@dataclass(frozen=True)
class Difference:
    """One field that differs: `where` is a cell (h100/vl), a hardware, a variant or the page;
    `detail` says it for a maintainer."""

    page: str
    where: str
    field: str
    ours: Any
    theirs: Any
    detail: str

    def line(self) -> str:
        return f"{self.page} {self.where} {self.field}: {self.detail}"


# ----- reading the files ----------------------------------------------------------------------
def read_text(source: str, path: str) -> tuple[str, str]:
    """(the name errors give it, its text): `path` under a base URL, or in a local folder (at
    `path`, as in a checkout of sgl-project/sglang, or by its file name alone)."""
    if source.startswith(("http://", "https://")):
        url = f"{source.rstrip('/')}/{path}"
        try:
            response = httpx.get(url, timeout=TIMEOUT_S, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise UpstreamInputError(f"{url}: cannot fetch it ({exc})") from None
        if response.status_code != 200:
            raise UpstreamInputError(
                f"{url}: HTTP {response.status_code} {response.reason_phrase} (check the URL)"
            )
        return url, response.text
    folder = Path(source)
    if not folder.is_dir():
        raise UpstreamInputError(f"{source}: not a folder or an http(s) URL")
    for candidate in (folder / path, folder / Path(path).name):
        if candidate.is_file():
            try:
                return str(candidate), candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UpstreamInputError(f"{candidate}: cannot read it ({exc})") from None
    raise UpstreamInputError(f"{folder / Path(path).name}: no such file (nor {folder / path})")


def read_export(source: str, path: str, expected: str, kind: type) -> tuple[str, Any]:
    name, text = read_text(source, path)
    export, value = parse_export(text, name)
    if export != expected or not isinstance(value, kind):
        raise UpstreamInputError(f"{name}: expected `export const {expected}` ({kind.__name__})")
    return name, value


# ----- both sides in one shape ----------------------------------------------------------------
def _workload(isl: int, osl: int, concurrency: int) -> str:
    return f"{isl}/{osl} c={concurrency}"


def _ours(recipes: Recipes, page_id: str) -> dict[str, Any]:
    page = recipes.pages[page_id]
    variants = [m for m in recipes.variants if recipes.models[m].page == page_id]
    hws = [hw for hw, row in recipes.deploy.cells.items() if any(v in row for v in variants)]
    card = published()["sglang_cookbook_card"]
    workloads = {
        _workload(w["isl"], w["osl"], w["max_concurrency"]): w for w in card["workloads"].values()
    }
    cells, bench = {}, {}
    for hw in hws:
        for variant in variants:
            if variant in recipes.deploy.cells[hw]:
                spec = verified_spec(hw, variant, recipes)
                cells[f"{hw}/{variant}"] = {
                    "verified": spec.verified, "env": list(spec.env), "flags": list(spec.flags)
                }  # fmt: skip
            numbers = card.get(hw, {}).get(variant)
            if numbers is None:
                continue
            entry: dict[str, Any] = {
                "sglang_version": card["measured_with"].get(page_id, {}).get(hw),
                "accuracy": {
                    f"{k}_pct": v
                    for k, v in card["accuracy_pct_by_hw"].get(variant, {}).get(hw, {}).items()
                },
            }
            for (name, w), row in zip(workloads.items(), numbers, strict=True):
                speed = dict(zip(METRICS, row, strict=True))
                entry[f"speed {name}"] = {**speed, "num_prompts": w["num_prompts"]}
            bench[f"{hw}/{variant}"] = entry
    return {
        "latencyPercentile": page.latency_statistic,
        "supportedHardware": hws,
        "variants": variants,
        "modelNames": {v: recipes.models[v].hf_id for v in variants},
        "dockerImages": dict.fromkeys(hws, page.docker_image),
        "github.cookbookModel": page.cookbook_model,
        "tp knob": page.tp_values,
        "parser toggles": {k: t.model_dump() for k, t in page.parser_toggles.items()},
        "defaultAccuracy": {
            v: {f"{k}_pct": x for k, x in card["accuracy_pct"][v].items()}
            for v in variants
            if v in card["accuracy_pct"]
        },
        "cells": cells,
        "bench": bench,
    }


def _theirs(config: dict, benchmarks: list, ours_id: dict[str, str], match: tuple) -> dict:
    """Upstream's files in the shape of `_ours`; `ours_id` maps their variant ids to ours, and
    `match` is our (quant, strategy, nodes): a cell with others is a cell of its own."""

    def key(m: dict) -> str:
        cell = f"{m['hw']}/{ours_id.get(m['variant'], m['variant'])}"
        rest = (m.get("quant"), m.get("strategy"), m.get("nodes"))
        return cell if rest == match else f"{cell} ({', '.join(map(str, rest))})"

    features = config.get("playgroundFeatures", {})
    knobs = {k["id"]: k["values"] for k in features.get("attention", {}).get("knobs", [])}
    bench = {}
    for entry in benchmarks:
        out: dict[str, Any] = {
            "sglang_version": entry.get("sglang_version"), "accuracy": entry.get("accuracy", {})
        }  # fmt: skip
        for s in entry.get("speed", []):
            w = s["workload"]
            out["speed " + _workload(w["isl"], w["osl"], w["max_concurrency"])] = {
                **{m: s.get(m) for m in METRICS}, "num_prompts": w.get("num_prompts")
            }  # fmt: skip
        bench[key(entry["match"])] = out
    variant_of = {}
    for name, hf_id in config.get("modelNames", {}).items():
        variant, _, quant = name.partition("|")
        mine = ours_id.get(variant, variant)
        variant_of[mine if quant == match[0] else name] = hf_id
    return {
        "latencyPercentile": config.get("latencyPercentile"),
        "supportedHardware": config.get("supportedHardware", []),
        "variants": [ours_id.get(v["id"], v["id"]) for v in config.get("variants", [])],
        "modelNames": variant_of,
        "dockerImages": config.get("dockerImages", {}),
        "github.cookbookModel": config.get("github", {}).get("cookbookModel"),
        "tp knob": knobs.get("tp"),
        "parser toggles": {
            p["id"]: {"label": p.get("label"), "flag": p.get("flag")}
            for p in features.get("parsers", {}).get("items", [])
        },
        "defaultAccuracy": {
            ours_id.get(v, v): a for v, a in config.get("defaultAccuracy", {}).items()
        },
        "cells": {
            key(c["match"]): {k: c.get(k) for k in ("verified", "env", "flags")}
            for c in config.get("cells", [])
        },
        "bench": bench,
    }


def _renames(recipes: Recipes, page_id: str, config: dict) -> tuple[dict, dict]:
    """(their variant id -> our model id, the renamed ones among them): the page's
    `upstream_variants`, then any variant of theirs we lack that has the model id of one of ours
    they lack (a renamed variant)."""
    page = recipes.pages[page_id]
    ours_id = {up: mine for mine, up in page.upstream_variants.items()}
    theirs = [v["id"] for v in config.get("variants", [])]
    hf_of = {n.partition("|")[0]: hf for n, hf in config.get("modelNames", {}).items()}
    mine = [m for m in recipes.variants if recipes.models[m].page == page_id]
    missing = [m for m in mine if m not in {ours_id.get(t, t) for t in theirs}]
    renamed = {}
    for t in theirs:
        found = next((m for m in missing if hf_of.get(t) == recipes.models[m].hf_id), None)
        if ours_id.get(t, t) not in mine and found:
            ours_id[t] = renamed[t] = found
            missing.remove(found)
    return ours_id, renamed


# ----- comparing ------------------------------------------------------------------------------
def _sequence(ours: list, theirs: list) -> str:
    """How two ordered lists differ, with 1-based positions."""
    if sorted(map(repr, ours)) == sorted(map(repr, theirs)):
        moved = [f"{x!r} at {i} in ours, {theirs.index(x) + 1} in theirs"
                 for i, x in enumerate(ours, 1) if theirs.index(x) + 1 != i]  # fmt: skip
        return "same items in another order: " + "; ".join(moved)
    parts = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(a=ours, b=theirs).get_opcodes():
        mine, up = ", ".join(map(repr, ours[a1:a2])), ", ".join(map(repr, theirs[b1:b2]))
        if op == "replace":
            parts.append(f"ours has {mine} at {a1 + 1}, theirs {up}")
        elif op == "delete":
            parts.append(f"ours has {mine} at {a1 + 1}, theirs lacks it")
        elif op == "insert":
            parts.append(f"theirs adds {up} at {b1 + 1}")
    return "; ".join(parts)


def _value(page: str, where: str, field: str, ours: Any, theirs: Any) -> list[Difference]:
    if ours == theirs:
        return []
    if isinstance(ours, list) and isinstance(theirs, list):
        detail = _sequence(ours, theirs)
    else:
        detail = f"ours {ours!r}, theirs {theirs!r}"
    return [Difference(page, where, field, ours, theirs, detail)]


def _only(page: str, where: str, field: str, ours: Any, theirs: Any) -> Difference:
    side = "ours" if theirs is None else "theirs"
    return Difference(page, where, field, ours, theirs, f"only {side} has it")


def _keyed(page: str, field: str, ours: dict, theirs: dict, per_key) -> list[Difference]:
    """Keys that are places (cells, GPUs, variants): those one side lacks, then per_key on each
    shared one."""
    out = []
    for k in [*ours, *(k for k in theirs if k not in ours)]:
        if k in ours and k in theirs:
            out += per_key(k, ours[k], theirs[k])
        else:
            out.append(_only(page, k, field, ours.get(k), theirs.get(k)))
    return out


def _fields(page: str, where: str, prefix: str, ours: dict, theirs: dict) -> list[Difference]:
    """Keys that are fields of one place; a field holding a dict is compared key by key."""
    out = []
    for k in [*ours, *(k for k in theirs if k not in ours)]:
        a, b = ours.get(k), theirs.get(k)
        if k not in ours or k not in theirs:
            out.append(_only(page, where, f"{prefix}{k}", a, b))
        elif isinstance(a, dict) and isinstance(b, dict):
            out += _fields(page, where, f"{prefix}{k} ", a, b)
        else:
            out += _value(page, where, f"{prefix}{k}", a, b)
    return out


def compare_page(page_id: str, ours: dict, theirs: dict, renamed: dict) -> list[Difference]:
    """Every difference of one page; `renamed`: their variant id -> ours, where they renamed it."""
    p = page_id
    out = [Difference(p, mine, "variant id", ours_name, up, f"renamed: theirs is now {up!r}, "
                      f"ours expects {ours_name!r} (same model id)")
           for up, (mine, ours_name) in renamed.items()]  # fmt: skip
    for field in ("latencyPercentile", "github.cookbookModel", "tp knob", "supportedHardware"):
        out += _value(p, "page", field, ours[field], theirs[field])
    out += _keyed(p, "variant", dict.fromkeys(ours["variants"], True),
                  dict.fromkeys(theirs["variants"], True), lambda *_: [])  # fmt: skip
    for field in ("modelNames", "dockerImages"):
        out += _keyed(p, field, ours[field], theirs[field],
                      lambda k, a, b, f=field: _value(p, k, f, a, b))  # fmt: skip
    out += _keyed(p, "parser toggle", ours["parser toggles"], theirs["parser toggles"],
                  lambda k, a, b: _fields(p, k, "parser toggle ", a, b))  # fmt: skip
    out += _keyed(p, "defaultAccuracy", ours["defaultAccuracy"], theirs["defaultAccuracy"],
                  lambda k, a, b: _fields(p, k, "defaultAccuracy ", a, b))  # fmt: skip
    out += _keyed(p, "cell", ours["cells"], theirs["cells"],
                  lambda k, a, b: _fields(p, k, "", a, b))  # fmt: skip
    out += _keyed(p, "benchmark", ours["bench"], theirs["bench"],
                  lambda k, a, b: _fields(p, k, "", a, b))  # fmt: skip
    return out


def check(source: str, recipes: Recipes | None = None) -> list[Difference]:
    """Every difference between data/ and the upstream files under `source` (a folder or a base
    URL); UpstreamInputError (exit 2) when a file is missing or is not literal data."""
    recipes = recipes or load_recipes()
    match = (recipes.deploy.quant, recipes.deploy.strategy, recipes.deploy.nodes)
    out = []
    for page_id, page in recipes.pages.items():
        name, config = read_export(source, page.config, "config", dict)
        bench_name, benchmarks = read_export(source, page.benchmarks, "benchmarks", list)
        try:
            ours_id, renamed = _renames(recipes, page_id, config)
            theirs = _theirs(config, benchmarks, ours_id, match)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamInputError(
                f"{name} or {bench_name}: not the layout this check knows ({exc!r} missing or "
                "of another type)"
            ) from None
        expected = {m: page.upstream_variants.get(m, m) for m in renamed.values()}
        out += compare_page(
            page_id, _ours(recipes, page_id), theirs,
            {up: (mine, expected[mine]) for up, mine in renamed.items()},
        )  # fmt: skip
    return out


def main(source: str | None, as_json: bool = False) -> int:
    """The CLI: prints the report (or JSON); 0 when nothing differs, 1 when something does."""
    source = source or UPSTREAM_RAW
    differences = check(source)
    if as_json:
        print(json.dumps([asdict(d) for d in differences], indent=2))
    else:
        for d in differences:
            print(d.line())
        count = len(differences)
        print(f"{count} difference{'s' * (count != 1)} between data/ and {source}")
    return 1 if differences else 0
