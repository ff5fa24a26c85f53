"""Classify images with a visual memory, explained by their neighbours (paper §4.1, Geirhos et al.)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from procvision.data.datasets import CorruptImageError, EvalTransform, open_image
from procvision.eval.embed import embed_batch
from procvision.memory import (
    METHODS,
    InvalidArgument,
    VisualMemory,
    map_labels,
    neighbour_weights,
    predict,
    vote_scores,
)


def classify_images(
    mem: VisualMemory,
    backbone,
    transform: EvalTransform,
    paths: list[str],
    k: int,
    method: str,
    T: float,
    device: str,
    skip_corrupt: bool = False,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Prediction, class scores and the k neighbours (id, label, similarity, weight, source) per image.

    Scores and weights are shares of the query's total vote; neighbours come in rank order
    (similarity desc, id asc), so every decision can be traced to the memory items behind it.
    An empty memory predicts nothing (prediction None, no neighbours). With `skip_corrupt`, an
    undecodable image gets {"image", "error"} instead of raising CorruptImageError. Queries are
    embedded with `embed_batch` in `precision` ("fp32"/"bf16": the memory recipe's, see
    `eval.recipe.recipe_precision`).
    """
    if method not in METHODS:
        raise InvalidArgument(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    images: dict[int, torch.Tensor] = {}
    errors: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            images[i] = transform(open_image(p))
        except CorruptImageError as err:
            if not skip_corrupt:
                raise
            errors[i] = str(err)
    done = _classify(mem, backbone, [images[i] for i in sorted(images)],
                     [paths[i] for i in sorted(images)], k, method, T, device, precision)  # fmt: skip
    it = iter(done)
    return [
        {"image": p, "error": errors[i]} if i in errors else next(it) for i, p in enumerate(paths)
    ]


def _classify(
    mem, backbone, images, paths, k, method, T, device, precision
) -> list[dict[str, Any]]:
    if not images:
        return []
    if len(mem) == 0:  # an empty memory (e.g. everything forgotten) is valid and predicts nothing
        return [{"image": p, "prediction": None, "label": -1, "scores": {}, "neighbours": []}
                for p in paths]  # fmt: skip
    if len({tuple(t.shape) for t in images}) > 1:
        raise InvalidArgument(
            "images of different sizes cannot be classified together with resize policy 'none': "
            "use the memory's recipe (drop --resize-policy) or classify them one at a time"
        )
    x = torch.stack(images).to(device)
    with torch.inference_mode():
        q = embed_batch(backbone, x, "cls", precision).cpu().numpy()
    sims, ids = mem.search(q, k, fingerprint=backbone.fingerprint())
    classes = mem.classes
    lab_idx = map_labels(mem.labels_of(ids), classes)
    scores = vote_scores(sims, lab_idx, len(classes), method, T)
    weights = neighbour_weights(sims, lab_idx, method, T)
    pred = predict(scores)
    names = mem.class_names
    name = lambda label: names[label] if names and 0 <= label < len(names) else str(label)  # noqa: E731
    out = []
    for r, path in enumerate(paths):
        valid = ids[r] >= 0
        meta = mem.metadata_of(ids[r][valid])
        total = float(scores[r].sum()) or 1.0
        ranked = np.argsort(-scores[r], kind="stable")
        label = int(classes[pred[r]]) if pred[r] >= 0 else -1
        out.append({
            "image": path,
            "prediction": name(label) if label >= 0 else None,
            "label": label,
            "scores": {name(int(classes[c])): float(scores[r, c] / total) for c in ranked if scores[r, c] > 0},
            "neighbours": [
                {"rank": int(j) + 1, "id": int(ids[r, j]), "label": name(int(mem.labels_of([ids[r, j]])[0])),
                 "similarity": float(sims[r, j]), "weight": float(weights[r, j] / total),
                 "source": m.get("source", "")}
                for j, m in zip(np.flatnonzero(valid), meta, strict=True)
            ],
        })  # fmt: skip
    return out
