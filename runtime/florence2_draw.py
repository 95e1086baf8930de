"""Florence-2 answers drawn on their image (`trtdeploy run --out-dir`): boxes, quad boxes and
polygons with their labels, or the text of a text answer in a band above the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_answer(image: Image.Image, answer: Any, path: Path) -> Path:
    """Write ``image`` with ``answer`` (a runtime.pipelines.florence2.Answer) drawn on it, as PNG."""
    canvas = image.convert("RGB").copy()
    parsed = answer.parsed
    if isinstance(parsed, str):
        canvas = _with_text_band(canvas, parsed)
    else:
        _draw_shapes(ImageDraw.Draw(canvas), parsed)
    canvas.save(path, format="PNG")
    return path


def _draw_shapes(draw: ImageDraw.ImageDraw, parsed: dict[str, Any]) -> None:
    labels = list(parsed.get("labels") or parsed.get("bboxes_labels") or [])
    for k, box in enumerate(parsed.get("bboxes", [])):
        colour = COLOURS[k % len(COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        if k < len(labels) and labels[k]:
            draw.text((x1 + 2, y1 + 2), str(labels[k]), fill=colour)
    for k, quad in enumerate(parsed.get("quad_boxes", [])):
        colour = COLOURS[k % len(COLOURS)]
        points = [(float(quad[i]), float(quad[i + 1])) for i in range(0, len(quad) - 1, 2)]
        draw.polygon(points, outline=colour)
        if k < len(labels) and labels[k]:
            draw.text(points[0], str(labels[k]), fill=colour)
    polygon_labels = list(parsed.get("polygons_labels") or labels)
    for k, polygons in enumerate(parsed.get("polygons", [])):
        colour = COLOURS[k % len(COLOURS)]
        for polygon in polygons:
            points = [(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon) - 1, 2)]
            if len(points) >= 2:
                draw.polygon(points, outline=colour)
        if k < len(polygon_labels) and polygon_labels[k] and polygons and len(polygons[0]) >= 2:
            draw.text((float(polygons[0][0]), float(polygons[0][1])), str(polygon_labels[k]), fill=colour)


def _with_text_band(image: Image.Image, text: str) -> Image.Image:
    band = 14 * (1 + len(text) // 80)
    out = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    out.paste(image, (0, band))
    draw = ImageDraw.Draw(out)
    for row in range(1 + len(text) // 80):
        draw.text((2, 1 + 14 * row), text[80 * row : 80 * (row + 1)], fill=(0, 0, 0))
    return out
