"""Images in and out of the service: checked uploads and thumbnails of registered sources.

Uploads are refused before decoding when they are too large in bytes, when their declared content
type is not an image type procvision decodes, when the bytes are another format than declared, or
when the header announces more pixels than allowed (a decompression bomb is refused from its
header, before any pixel is decoded). Thumbnails are only ever rendered for an item of the current
snapshot, from the source the memory registered for it (a file, a dataset row `file#row`, or the
bytes kept inside the memory for uploads), and only when the bytes still hash to the item's
recorded sha256; they are always re-encoded as PNG.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from procvision.data.datasets.transforms import to_rgb

# declared content type -> the PIL format its bytes must have
CONTENT_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
}
THUMB_SIDE = 160


class ImageRejected(Exception):
    """An uploaded or stored image that the service will not use; carries an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    """Per-file byte limit, per-image pixel limit and files per request."""

    max_bytes: int = 8 << 20
    max_pixels: int = 16_000_000
    max_files: int = 64


def decode_upload(
    data: bytes, content_type: str | None, filename: str, limits: UploadLimits
) -> Image.Image:
    """Checked decode of one uploaded file -> RGB PIL image; ImageRejected (400/413/415) otherwise."""
    name = filename or "upload"
    if not data:
        raise ImageRejected(400, f"{name}: empty file; send the image's bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            413, f"{name}: the file exceeds the limit of {limits.max_bytes} bytes per image"
        )
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in CONTENT_TYPES:
        raise ImageRejected(
            415,
            f"{name}: content type {ctype or 'none'!r} is not accepted; send one of "
            + ", ".join(sorted(set(CONTENT_TYPES))),
        )
    return decode_bytes(data, name, limits.max_pixels, CONTENT_TYPES[ctype])


def decode_bytes(
    data: bytes, name: str, max_pixels: int, expect_format: str | None = None
) -> Image.Image:
    """Decode image bytes with the header checked first (format, pixel count) -> RGB image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            fmt = img.format
            if fmt not in set(CONTENT_TYPES.values()):
                raise ImageRejected(415, f"{name}: {fmt} images are not accepted")
            if expect_format is not None and fmt != expect_format:
                raise ImageRejected(
                    415, f"{name}: declared as {expect_format} but the bytes are {fmt}"
                )
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected(
                    413,
                    f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                    "(refused before decoding: possible decompression bomb)",
                )
            img.load()
            return to_rgb(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageRejected(413, f"{name}: decompression bomb refused ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(400, f"{name}: not a decodable image ({err})") from err


def thumbnail_png(img: Image.Image, side: int = THUMB_SIDE) -> bytes:
    """RGB image -> PNG bytes no larger than side x side (small images are kept as they are)."""
    img = to_rgb(img).copy()
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- registered sources
@functools.lru_cache(maxsize=4)
def _dataset_array(path: str, kind: str, key: str, mtime_ns: int, size: int) -> np.ndarray:
    """A dataset's image array (IDX file or MedMNIST npz member), cached by file identity."""
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    if kind == "npz":
        from procvision.data.datasets.medmnist import npz_array

        return npz_array(path, key)
    from procvision.data.datasets.idx import read_idx

    return read_idx(path)


def _row_image(source: str, sha256: str | None) -> Image.Image:
    origin, _, row_text = source.rpartition("#")
    try:
        row = int(row_text)
    except ValueError as err:
        raise ImageRejected(404, f"source {source!r}: not a file#row source") from err
    key = ""
    path = origin
    kind = "idx"
    if ".npz:" in origin:  # MedMNIST: FILE.npz:split
        path, _, split = origin.rpartition(":")
        kind, key = "npz", f"{split}_images"
    p = Path(path)
    if not p.is_file():
        raise ImageRejected(404, f"source file {path} is no longer readable")
    st = p.stat()
    try:
        arr = _dataset_array(str(p), kind, key, st.st_mtime_ns, st.st_size)
    except Exception as err:  # a dataset file that no longer parses
        raise ImageRejected(404, f"source file {path} cannot be read ({err})") from err
    if not 0 <= row < len(arr):
        raise ImageRejected(404, f"source {source!r}: row out of range")
    pixels = np.ascontiguousarray(arr[row])
    if sha256 and hashlib.sha256(pixels.tobytes()).hexdigest() != sha256:
        raise ImageRejected(409, f"source {source!r} changed since it was added to the memory")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(pixels.astype(np.uint8))


def item_image(item: dict, max_pixels: int, max_file_bytes: int = 256 << 20) -> Image.Image:
    """The image of a memory item from what the memory registered for it (see module docstring)."""
    sha = item.get("sha256")
    if "blob_error" in item:  # an upload whose bytes are gone (forgotten meanwhile) or damaged
        status, why = item["blob_error"]
        raise ImageRejected(status, f"item {item['id']}: its uploaded image cannot be read ({why})")
    if "image_bytes" in item:
        data = item["image_bytes"]
        if sha and hashlib.sha256(data).hexdigest() != sha:
            raise ImageRejected(409, f"item {item['id']}: stored bytes do not match its sha256")
        return decode_bytes(data, f"item {item['id']}", max_pixels)
    source = item.get("source") or ""
    if not source:
        raise ImageRejected(404, f"item {item['id']} has no registered source")
    p = Path(source)
    if "#" in source and not p.is_file():
        return _row_image(source, sha)
    if not p.is_absolute() or not p.is_file():
        raise ImageRejected(404, f"item {item['id']}: source {source} is not a readable file")
    if p.stat().st_size > max_file_bytes:
        raise ImageRejected(413, f"item {item['id']}: source file is too large to render")
    data = p.read_bytes()
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise ImageRejected(409, f"item {item['id']}: {source} changed since it was added")
    return decode_bytes(data, source, max_pixels)
