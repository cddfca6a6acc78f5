"""Grounding helpers: parsing boxes out of model answers, scoring and drawing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cookbook.vision import Box, draw_boxes, iou, load_truth, parse_boxes

IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"


def test_normalised_pixel_and_thousand_grids():
    text = 'Sure: [{"label": "cat", "bbox": [0.1, 0.2, 0.5, 0.6]}, {"label": "dog", "bbox": [10, 20, 50, 60]}]'
    cat, dog = parse_boxes(text, 200, 100)
    assert (cat.label, cat.x1, cat.y1, cat.x2, cat.y2) == ("cat", 20.0, 20.0, 100.0, 60.0)
    assert (dog.x1, dog.y1, dog.x2, dog.y2) == (10.0, 20.0, 50.0, 60.0)
    (grid,) = parse_boxes('[{"label": "x", "bbox": [100, 100, 500, 900]}]', 200, 100)
    assert (grid.x1, grid.y1, grid.x2, grid.y2) == (20.0, 10.0, 100.0, 90.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no boxes here",
        "[{broken json}]",
        '[{"label": "a", "bbox": [1, 2]}]',
        '[{"label": "a", "bbox": ["x", 0, 1, 1]}]',
        '[{"label": "a", "bbox": [0.5, 0.5, 0.5, 0.9]}]',
    ],
)
def test_unreadable_answers_give_no_boxes(text):
    assert parse_boxes(text, 100, 100) == []


def test_swapped_corners_are_ordered_and_clipped():
    (box,) = parse_boxes('[{"label": "a", "bbox": [90, 80, 10, 20]}]', 100, 100)
    assert (box.x1, box.y1, box.x2, box.y2) == (10.0, 20.0, 90.0, 80.0)
    (edge,) = parse_boxes('[{"label": "a", "bbox": [-0.1, 0.2, 0.5, 0.6]}]', 100, 100)
    assert (edge.x1, edge.y1, edge.x2, edge.y2) == (0.0, 20.0, 50.0, 60.0)


def test_iou():
    a = Box("a", 0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, Box("b", 5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(a, Box("c", 20, 20, 30, 30)) == 0.0


def test_truth_and_drawing(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    (width, height), truth = load_truth(IMAGES / "shapes.json")
    assert (width, height) == (480, 320) and [b.label for b in truth] == [
        "red square",
        "blue circle",
        "green triangle",
    ]
    ax = draw_boxes(IMAGES / "shapes.png", truth[:1], truth=truth)
    assert len(ax.patches) == 4
    ax.figure.savefig(tmp_path / "boxes.png")
    assert (tmp_path / "boxes.png").stat().st_size > 1000
