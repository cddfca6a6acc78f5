"""The Playground: TP override -> new command, line diff, badge, and the submit URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from cookbook.commands import line_diff, playground
from cookbook.recipes import CookbookChoiceError


@pytest.mark.parametrize("tp", [None, 1])
def test_no_change_keeps_verified(tp):
    result = playground("h100", "8b-a1b", tp=tp)
    assert result.verified
    assert result.command == result.base_command
    assert result.added == [] and result.removed == []
    assert result.submit_url is None


@pytest.mark.parametrize("docker", [False, True])
def test_tp2_flips_the_badge_and_shows_the_diff(docker):
    result = playground("b200", "8b-a1b", tp=2, docker=docker)
    indent = "    " if docker else "  "
    assert not result.verified and result.base.verified
    assert result.removed == [f"{indent}--tp 1"]
    assert result.added == [f"{indent}--tp 2"]
    lines = result.command.splitlines()
    # --tp stays right after --model-path, as upstream inserts it.
    at = next(i for i, line in enumerate(lines) if "--model-path" in line)
    assert lines[at + 1] == f"{indent}--tp 2 \\"
    assert result.command.count("--tp") == 1


def test_submit_url_carries_the_combination_and_command():
    result = playground("h200", "vl", tp=2)
    url = urlsplit(result.submit_url)
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "github.com",
        "/sgl-project/sglang/issues/new",
    )
    query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    assert query["template"] == "3-playground-verified-cell.yml"
    assert query["title"] == "[Playground] Verified cell: h200 / vl / bf16 / default / single"
    assert query["combination"] == "h200 / vl / bf16 / default / single"
    assert query["model"] == "LiquidAI/lfm2.5"
    assert result.command in query["cell-snippet"]
    assert "--tp 2" in query["cell-snippet"]
    # The verified cell it departs from, for the maintainers' diff; not the new command.
    assert result.base_command in query["existing-cell"]
    assert "--tp 2" not in query["existing-cell"]
    assert "sglang-version" in query  # filled with the installed SGLang, else left to the user


def test_derived_recipe_is_not_verified_even_without_overrides():
    result = playground("l4", "instruct")
    assert not result.verified and result.added == [] and result.removed == []
    assert result.submit_url is not None and "l4+%2F+instruct" in result.submit_url
    query = {k: v[0] for k, v in parse_qs(urlsplit(result.submit_url).query).items()}
    assert query.get("existing-cell", "") == ""  # a derived recipe is no verified cell


def test_invalid_tp_lists_valid_values():
    with pytest.raises(CookbookChoiceError, match=r"unknown TP override 4; valid: 1, 2"):
        playground("h100", "instruct", tp=4)


def test_line_diff_ignores_continuations_and_keeps_order():
    base = "a \\\n  --x 1 \\\n  --y"
    new = "a \\\n  --x 2 \\\n  --y \\\n  --z"
    diff = [(d.tag, d.text) for d in line_diff(base, new)]
    assert diff == [(" ", "a"), ("-", "  --x 1"), ("+", "  --x 2"), (" ", "  --y"), ("+", "  --z")]
