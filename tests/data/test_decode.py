"""The shared decoder (`vmfml.data.decode`): formats allowed by their first bytes only, pixels
counted before decoding, and wide pixel types (16-bit, 32-bit integer, float) read by range."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from vmfml.data import decode, decode_image

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height grey pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("WEBP", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("PPM", "RGB"),
        ("PPM", "L"),  # PGM
    ],
)
def test_every_allowed_raster_format_is_read(fmt: str, mode: str) -> None:
    image = decode.open_image(encoded(Image.new(mode, (9, 7)), fmt))
    assert image.size == (9, 7)


def test_a_bigtiff_is_a_tiff() -> None:
    buffer = io.BytesIO()
    Image.new("L", (5, 4), 9).save(buffer, format="TIFF", big_tiff=True)
    buffer.seek(0)
    assert decode.open_image(buffer).size == (5, 4)


def test_eps_and_other_formats_are_refused_before_pillow_sees_them(monkeypatch) -> None:
    opened = []
    monkeypatch.setattr(
        EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self) or 1 / 0
    )
    for data in (EPS, encoded(Image.new("RGB", (4, 4)), "ICO").getvalue(), b"", b"hello"):
        with pytest.raises(decode.UnsupportedFormat, match="not an image in a supported format"):
            decode.open_image(io.BytesIO(data), what="the upload")
    assert opened == []  # the EPS plugin (Ghostscript) was never tried


def test_a_file_named_png_is_read_by_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "looks.png"
    path.write_bytes(EPS)
    with pytest.raises(decode.UnsupportedFormat, match=f"cannot read image {path}"):
        decode.open_image(path)
    with pytest.raises(ValueError, match=f"cannot read image {path}: it is not an image"):
        decode_image(path)


def test_pixels_are_counted_before_decoding() -> None:
    with pytest.raises(decode.TooManyPixels, match="5000x5000 = 25000000 pixels"):
        decode.open_image(io.BytesIO(png_header_only(5_000, 5_000)), max_pixels=10**6)
    # Past Pillow's own bomb threshold, with the default limit: the same refusal.
    with pytest.raises(decode.TooManyPixels):
        decode.open_image(io.BytesIO(png_header_only(20_000, 20_000)))
    with pytest.raises(decode.TooManyPixels, match="more than the limit of 100 pixels"):
        decode.open_image(encoded(Image.new("L", (11, 10)), "PNG"), max_pixels=100)


def test_a_jpeg_over_the_limit_is_decoded_reduced() -> None:
    y, x = np.mgrid[0:400, 0:640]
    photo = Image.fromarray(np.stack([x % 256, y % 256, (x // 3) % 256], -1).astype(np.uint8))
    assert decode.open_image(encoded(photo, "JPEG"), max_pixels=640 * 400).size == (640, 400)
    assert decode.open_image(encoded(photo, "JPEG"), max_pixels=320 * 200).size == (320, 200)
    assert decode.open_image(encoded(photo, "JPEG"), max_pixels=100 * 100).size == (80, 50)
    with pytest.raises(decode.TooManyPixels):  # beyond 1/8 of each side
        decode.open_image(encoded(photo, "JPEG"), max_pixels=1000)


def test_damaged_data_is_refused_by_name() -> None:
    data = encoded(Image.new("L", (64, 64), 3), "PNG").getvalue()
    with pytest.raises(decode.DamagedImage, match="damaged or truncated PNG"):
        decode.open_image(io.BytesIO(data[: len(data) // 2]), what="cut.png")


def _tiff(tmp_path: Path, values: np.ndarray, mode: str) -> Path:
    path = tmp_path / f"{mode}.tif"
    Image.fromarray(values, mode).save(path)
    return path


def test_float_tiffs_are_read_by_their_range(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    got = decode_image(_tiff(tmp_path, unit, "F"), mode="L")[0].numpy()
    np.testing.assert_array_equal(got, [[0, 64, 128, 255]])  # Pillow's own: [[0, 0, 0, 1]]
    wide = np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(decode_image(_tiff(tmp_path, wide, "F"), "L")[0], [[0, 128, 255]])
    bad = np.array([[0.0, np.nan]], dtype=np.float32)
    with pytest.raises(decode.DamagedImage, match="NaN or infinite"):
        decode_image(_tiff(tmp_path, bad, "F"))


def test_32_bit_integer_tiffs_are_read_by_their_range(tmp_path: Path) -> None:
    small = np.array([[0, 7, 255]], dtype=np.int32)
    np.testing.assert_array_equal(decode_image(_tiff(tmp_path, small, "I"), "L")[0], [[0, 7, 255]])
    sixteen = np.array([[0, 257 * 100, 65535]], dtype=np.int32)
    got = decode_image(_tiff(tmp_path, sixteen, "I"), "RGB")
    np.testing.assert_array_equal(got[:, 0], [[0, 100, 255]] * 3)  # Pillow's own: 0, 255, 255
    huge = np.array([[0, 1 << 20, 1 << 21]], dtype=np.int32)
    np.testing.assert_array_equal(decode_image(_tiff(tmp_path, huge, "I"), "L")[0], [[0, 128, 255]])
