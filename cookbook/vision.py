"""Grounding: ask for boxes as JSON, parse what comes back, draw it, and score it.

The prompt asks for `[{"label": ..., "bbox": [x1, y1, x2, y2]}]` with coordinates normalised to
0-1. Models do not always oblige exactly, so the parser also takes pixel coordinates and 0-1000
scales, and ignores entries it cannot read (it never raises on model output).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookbook.paths import DATA_DIR

IMAGES_DIR = DATA_DIR / "images"  # from ci/render_images.py
GROUNDING_PROMPT = (
    "Detect every object in the image. Answer with JSON only: a list of objects "
    '[{"label": "<name>", "bbox": [x1, y1, x2, y2]}] with coordinates normalised to 0-1.'
)
_JSON_LIST = re.compile(r"\[\s*\{.*\}\s*\]", re.DOTALL)


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float  # pixels

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


def _to_pixels(coords: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(c) for c in coords)
    biggest = max(x1, y1, x2, y2)
    if biggest <= 1.0:  # normalised 0-1
        scale_x, scale_y = width, height
    elif biggest <= 1000 and (biggest > max(width, height)):  # a 0-1000 grid
        scale_x, scale_y = width / 1000, height / 1000
    else:  # already pixels
        scale_x = scale_y = 1.0
    x1, x2 = sorted((x1 * scale_x, x2 * scale_x))
    y1, y2 = sorted((y1 * scale_y, y2 * scale_y))
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def parse_boxes(text: str, width: int, height: int) -> list[Box]:
    """Boxes found in a model's answer (an empty list when there are none)."""
    match = _JSON_LIST.search(text or "")
    if not match:
        return []
    try:
        items: Any = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    boxes = []
    for item in items if isinstance(items, list) else []:
        coords = item.get("bbox") or item.get("box") if isinstance(item, dict) else None
        if not (isinstance(coords, list) and len(coords) == 4):
            continue
        try:
            box = Box(str(item.get("label", "object")), *_to_pixels(coords, width, height))
        except (TypeError, ValueError):
            continue
        if box.area > 0:
            boxes.append(box)
    return boxes


def iou(a: Box, b: Box) -> float:
    inter = Box("", max(a.x1, b.x1), max(a.y1, b.y1), min(a.x2, b.x2), min(a.y2, b.y2)).area
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def load_truth(path: str | Path) -> tuple[tuple[int, int], list[Box]]:
    """The ground truth written by ci/render_images.py: ((width, height), boxes)."""
    data = json.loads(Path(path).read_text())
    size = (data["image"]["width"], data["image"]["height"])
    return size, [Box(o["label"], *map(float, o["bbox"])) for o in data["objects"]]


def draw_boxes(image_path: str | Path, boxes: list[Box], truth: list[Box] = (), ax=None):
    """Draw predicted boxes (solid) and ground truth (dashed) on the image; returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.imshow(Image.open(image_path))
    for box, style, colour in [
        *((b, "--", "black") for b in truth),
        *((b, "-", "yellow") for b in boxes),
    ]:
        ax.add_patch(Rectangle((box.x1, box.y1), box.x2 - box.x1, box.y2 - box.y1, fill=False,
                               linestyle=style, linewidth=2, edgecolor=colour))  # fmt: skip
        if style == "-":
            ax.text(
                box.x1, box.y1 - 4, box.label, color="black", backgroundcolor="yellow", fontsize=8
            )
    ax.set_axis_off()
    return ax
