"""A tiny NIGHTS folder in the DreamSim release layout, with hand-known answers.

Images are flat colours. With an embedder that returns the mean colour, every distance is known:
the model picks the side whose colour equals the reference (distance 0).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HEADER = "id,left_vote,right_vote,votes,ref_path,left_path,right_path,split,is_imagenet,prompt"
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)

# (id, left_vote, right_vote, votes, ref, left, right, split, is_imagenet); colours by name
ROWS = [
    # kept (val, >= 6 votes):
    ("0", 1, 0, 6, "red", "red", "blue", "val", True),  # humans left, model left -> 1
    ("1", 0, 1, 7, "blue", "red", "blue", "val", False),  # humans right, model right -> 1
    ("2", 0, 1, 8, "red", "red", "green", "val", True),  # humans right, model left -> 0
    ("3", 1, 0, 9, "green", "blue", "blue", "val", False),  # left == right image -> tie 0.5
    # filtered:
    ("4", 1, 0, 5, "red", "blue", "red", "val", True),  # 5 votes < 6 (model would score 0)
    ("5", 0, 1, 10, "red", "red", "blue", "train", True),  # other split
    ("6", 1, 0, 6, "blue", "blue", "red", "test", True),  # test, imagenet
    ("7", 0, 1, 6, "blue", "blue", "red", "test", False),  # test, not imagenet
]
COLOURS = {"red": RED, "blue": BLUE, "green": GREEN}
# the 2AFC of a mean-colour embedder on the val split: (1 + 1 + 0 + 0.5) / 4
EXPECTED_VAL = 2.5 / 4


def make_nights(root: Path, size: int = 12) -> Path:
    """root/data.csv + root/ref/000/<id>.png + root/distort/000/<id>_{0,1}.png."""
    (root / "ref" / "000").mkdir(parents=True, exist_ok=True)
    (root / "distort" / "000").mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for rid, lv, rv, votes, ref, left, right, split, imnet in ROWS:
        paths = (f"ref/000/{rid}.png", f"distort/000/{rid}_0.png", f"distort/000/{rid}_1.png")
        for rel, colour in zip(paths, (ref, left, right), strict=True):
            Image.new("RGB", (size, size), COLOURS[colour]).save(root / rel)
        lines.append(f"{rid},{lv},{rv},{votes},{paths[0]},{paths[1]},{paths[2]},{split},"
                     f"{imnet},a prompt {rid}")  # fmt: skip
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return root
