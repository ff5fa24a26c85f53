"""What the tool commands share: reporting user errors as one line with exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from procvision.errors import UserError

# Raised by the standard library for a user's path that is missing or of the wrong kind; these
# are reported as user errors only where a command opens what the user named.
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def fail(prog: str, message: object) -> int:
    """Print `prog: error: message` to stderr and return the user-error exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def run_reporting(
    prog: str, fn: Callable[..., int | None], *args: Any, extra: tuple[type, ...] = ()
) -> int:
    """Call `fn(*args)`; a `UserError` (or one of `extra`) becomes one line on stderr and exit 2."""
    try:
        return int(fn(*args) or 0)
    except (UserError, *extra) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        return fail(prog, msg)


def add_embedding_arguments(parser: Any, recorded_in: str = "the JSON") -> None:
    """`--precision auto|fp32|bf16` and `--feature cls|cls_prenorm`, meaning what validate's
    `--model.precision` / `--model.feature` mean, for commands that embed a dataset themselves."""
    from typing import Literal

    parser.add_argument(
        "--precision",
        type=Literal["auto", "fp32", "bf16"],
        default="auto",
        help="embedding precision, as validate's --model.precision (auto: bf16 on CUDA and on "
        f"CPUs with native bf16, else fp32); recorded in {recorded_in}",
    )
    parser.add_argument(
        "--feature",
        type=Literal["cls", "cls_prenorm"],
        default="cls",
        help=f"CLS after (cls) or before (cls_prenorm) the final norm; recorded in {recorded_in}",
    )


def open_dataset_features(
    cfg: Any, batch_size: int, error: type[UserError]
) -> tuple[Any, dict, int]:
    """(features, model record, input size) for a command's `--backbone` (see
    `procvision.eval.linear.dataset_features`), with its `--device`, `--num-workers`, `--cache-dir`,
    `--feature` and `--precision`; the size is `--image-size` or the backbone's img_size (224 for
    pixels). A bad backbone is `error`, naming `--backbone`."""
    from procvision.eval.linear import dataset_features

    try:
        features, model = dataset_features(cfg.backbone, cfg.device, batch_size, cfg.num_workers,
                                           cache_dir=cfg.cache_dir, feature=cfg.feature,
                                           precision=cfg.precision)  # fmt: skip
    except ValueError as err:
        raise error(f"--backbone {cfg.backbone}: {err}") from err
    backbone = getattr(features, "backbone", None)
    size = cfg.image_size or int(getattr(backbone, "config", {}).get("img_size", 224))
    return features, model, size
