"""A picture of k-NN decisions: each row is a query followed by its nearest memory neighbours, each
annotated with its label and cosine similarity (green: same label as the query, red: different)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from procvision.data.datasets.transforms import to_rgb

Neighbour = tuple[Image.Image, str, float]  # image, label name, similarity


def neighbour_panel(
    queries: Sequence[tuple[Image.Image, str]],
    neighbours: Sequence[Sequence[Neighbour]],
    cell: int = 72,
    text_height: int = 24,
) -> np.ndarray:
    """Rows `query | n1 | n2 | ...` -> uint8 image [H, W, 3] (HWC, for TensorBoard `add_image`).

    Args:
        queries: (image, label name) per row.
        neighbours: per row, the neighbours in rank order as (image, label name, similarity).
        cell: side of each thumbnail in pixels.
        text_height: pixels under each thumbnail for the two text lines.
    """
    if len(queries) != len(neighbours):
        raise ValueError(f"{len(queries)} queries but {len(neighbours)} neighbour rows")
    cols = 1 + max((len(n) for n in neighbours), default=0)
    h, w = cell + text_height, cell + 4
    canvas = Image.new("RGB", (cols * w, max(1, len(queries)) * h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, ((q_img, q_label), row) in enumerate(zip(queries, neighbours, strict=True)):
        y = r * h
        _paste(canvas, q_img, 0, y, cell)
        draw.rectangle([0, y, cell - 1, y + cell - 1], outline=(0, 0, 0), width=2)
        draw.text((1, y + cell + 1), _short(f"query: {q_label}", cell), fill=(0, 0, 0), font=font)
        for c, (n_img, n_label, sim) in enumerate(row, start=1):
            x = c * w
            colour = (0, 140, 0) if n_label == q_label else (200, 0, 0)
            _paste(canvas, n_img, x, y, cell)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=2)
            draw.text((x + 1, y + cell + 1), _short(n_label, cell), fill=colour, font=font)
            draw.text((x + 1, y + cell + 12), f"{sim:.3f}", fill=colour, font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _paste(canvas: Image.Image, img: Image.Image, x: int, y: int, cell: int) -> None:
    canvas.paste(to_rgb(img).resize((cell, cell), Image.Resampling.NEAREST), (x, y))


def _short(text: str, cell: int) -> str:
    max_chars = max(3, cell // 6)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
