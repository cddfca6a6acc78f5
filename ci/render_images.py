"""Render the vision notebook's test images into data/images/ (deterministic; committed).

    .venv/bin/python ci/render_images.py

- receipt.png: a small document with known text, for OCR;
- shapes.png: coloured shapes at known places, for grounding (the boxes are in shapes.json);
- colors.png: three colour swatches, for the several-images-in-one-turn example.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent.parent / "data" / "images"

RECEIPT_LINES = [
    "CORNER CAFE",
    "12 Harbour Street",
    "",
    "Espresso          2.50",
    "Croissant         3.20",
    "Orange juice      4.00",
    "",
    "TOTAL             9.70",
    "Paid by card  2026-11-22",
]
SHAPES = [  # label, colour, box in pixels (x1, y1, x2, y2) on a 480 x 320 canvas
    ("red square", (220, 40, 40), (40, 60, 160, 180)),
    ("blue circle", (40, 80, 220), (220, 40, 340, 160)),
    ("green triangle", (40, 160, 60), (300, 170, 440, 300)),
]


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def receipt() -> Image.Image:
    image = Image.new("RGB", (420, 360), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(RECEIPT_LINES):
        draw.text((30, 24 + n * 36), line, fill="black", font=font(24))
    return image


def shapes() -> tuple[Image.Image, list[dict]]:
    image = Image.new("RGB", (480, 320), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    boxes = []
    for label, colour, (x1, y1, x2, y2) in SHAPES:
        if "square" in label:
            draw.rectangle((x1, y1, x2, y2), fill=colour)
        elif "circle" in label:
            draw.ellipse((x1, y1, x2, y2), fill=colour)
        else:
            draw.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=colour)
        boxes.append({"label": label, "bbox": [x1, y1, x2, y2]})
    return image, boxes


def colors() -> Image.Image:
    image = Image.new("RGB", (300, 100), "white")
    draw = ImageDraw.Draw(image)
    for n, colour in enumerate(["red", "green", "blue"]):
        draw.rectangle((n * 100, 0, n * 100 + 99, 99), fill=colour)
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    receipt().save(OUT / "receipt.png", optimize=True)
    (OUT / "receipt.txt").write_text("\n".join(RECEIPT_LINES) + "\n")
    image, boxes = shapes()
    image.save(OUT / "shapes.png", optimize=True)
    size = {"width": image.width, "height": image.height}
    (OUT / "shapes.json").write_text(json.dumps({"image": size, "objects": boxes}, indent=2) + "\n")
    colors().save(OUT / "colors.png", optimize=True)
    print("wrote", ", ".join(sorted(p.name for p in OUT.iterdir())))


if __name__ == "__main__":
    main()
