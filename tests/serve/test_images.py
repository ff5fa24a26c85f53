"""Upload checks and thumbnails of registered sources (files, IDX and npz rows, stored bytes)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from procvision.serve.images import (
    ImageRejected,
    UploadLimits,
    decode_upload,
    item_image,
    thumbnail_png,
)
from tests.fixtures_real import make_medmnist_npz, write_idx


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "ctype"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                            ("GIF", "image/gif"), ("BMP", "image/bmp"),
                                            ("WEBP", "image/webp"), ("TIFF", "image/tiff")])  # fmt: skip
def test_accepted_formats_decode_to_rgb(fmt: str, ctype: str) -> None:
    img = Image.new("L", (9, 7), 128)
    out = decode_upload(_encode(img, fmt), ctype + "; charset=binary", "x", UploadLimits())
    assert out.mode == "RGB" and out.size == (9, 7)


def test_refusals_carry_their_status() -> None:
    lim = UploadLimits(max_bytes=10_000, max_pixels=100)
    png = _encode(Image.new("RGB", (10, 10)), "PNG")
    with pytest.raises(ImageRejected) as e:
        decode_upload(png, "application/octet-stream", "a.png", lim)
    assert e.value.status == 415
    with pytest.raises(ImageRejected) as e:
        decode_upload(_encode(Image.new("RGB", (11, 10)), "PNG"), "image/png", "a.png", lim)
    assert e.value.status == 413 and "decompression bomb" in e.value.message
    with pytest.raises(ImageRejected) as e:
        decode_upload(_encode(Image.new("RGB", (4, 4)), "ICO"), "image/png", "a.ico", lim)
    assert e.value.status == 415


def test_thumbnail_keeps_small_and_shrinks_large() -> None:
    small = Image.open(io.BytesIO(thumbnail_png(Image.new("RGB", (28, 28)))))
    big = Image.open(io.BytesIO(thumbnail_png(Image.new("RGB", (640, 320)))))
    assert small.size == (28, 28) and big.size == (160, 80) and big.format == "PNG"


def test_idx_row_source_is_rendered_and_checked(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    sha = hashlib.sha256(images[3].tobytes()).hexdigest()
    img = item_image({"id": 1, "source": f"{path}#3", "sha256": sha}, 10_000)
    assert np.array_equal(np.asarray(img), images[3])
    with pytest.raises(ImageRejected) as e:
        item_image({"id": 1, "source": f"{path}#3", "sha256": "0" * 64}, 10_000)
    assert e.value.status == 409
    with pytest.raises(ImageRejected) as e:
        item_image({"id": 1, "source": f"{path}#9", "sha256": sha}, 10_000)
    assert e.value.status == 404


def test_npz_row_source_and_stored_bytes(tmp_path: Path) -> None:
    npz = make_medmnist_npz(tmp_path / "pathmnist.npz", rgb=True)
    arr = np.load(npz)["test_images"][2]
    sha = hashlib.sha256(arr.tobytes()).hexdigest()
    img = item_image({"id": 4, "source": f"{npz.absolute()}:test#2", "sha256": sha}, 10_000)
    assert np.array_equal(np.asarray(img), arr)
    data = _encode(Image.new("RGB", (6, 6), (1, 2, 3)), "PNG")
    item = {
        "id": 5,
        "source": "upload:x",
        "sha256": hashlib.sha256(data).hexdigest(),
        "image_bytes": data,
    }
    assert item_image(item, 100).getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ImageRejected) as e:
        item_image({**item, "image_bytes": data + b"x"}, 100)
    assert e.value.status == 409
    with pytest.raises(ImageRejected) as e:
        item_image({"id": 6, "source": "relative/path.png", "sha256": None}, 100)
    assert e.value.status == 404
