from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from station.vision.images import ImageError, decode_image, ensure_frame


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A few hundred bytes claiming 10,000 x 10,000 pixels: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _png_chunk(b"IEND", b""))


def huge_jpeg() -> bytes:
    """A real small JPEG whose SOF header is patched to say 10,000 x 10,000."""
    _ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 10_000, 10_000)
    return bytes(data)


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_jpeg_decodes_to_bgr() -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    _ok, buf = cv2.imencode(".png", frame)
    out = decode_image(buf.tobytes())
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("maker", [huge_png, huge_jpeg])
def test_huge_image_is_refused_from_its_header(maker) -> None:
    with pytest.raises(ImageError) as err:
        decode_image(maker())
    assert err.value.reason == "too_large"
    assert "10000x10000" in str(err.value)


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(b"")
    assert err.value.reason == "empty"


def test_corrupt_bytes_are_refused() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    assert err.value.reason in ("corrupt", "truncated")


def test_truncated_jpeg_is_refused_not_padded_grey() -> None:
    rng = np.random.default_rng(1)
    _ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))
    data = buf.tobytes()
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) * 2 // 3])
    assert err.value.reason == "truncated"


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
@pytest.mark.parametrize("pil_pads_truncated", [False, True])
def test_truncated_images_are_refused(monkeypatch, ext: str, pil_pads_truncated: bool) -> None:
    """Also when PIL's global LOAD_TRUNCATED_IMAGES is on (importing face_recognition sets
    it): we must not depend on process-wide state someone else flips."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pil_pads_truncated)
    rng = np.random.default_rng(2)
    _ok, buf = cv2.imencode(ext, rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = buf.tobytes()
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.reason in ("truncated", "corrupt")


@pytest.mark.parametrize("fmt,magic", [("TIFF", b"II*"), ("GIF", b"GIF8"), ("ICO", b"\0\0\1\0")])
def test_odd_formats_are_refused_by_name(fmt: str, magic: bytes) -> None:
    data = encode(Image.new("RGB", (32, 32), (10, 20, 30)), fmt)
    assert data.startswith(magic)
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.reason == "unsupported_format"


def test_text_is_not_an_image() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(b"%PDF-1.7 hello")
    assert err.value.reason == "unsupported_format"


def test_grayscale_becomes_three_channels() -> None:
    out = decode_image(encode(Image.new("L", (30, 20), 77), "PNG"))
    assert out.shape == (20, 30, 3)
    assert (out == 77).all()


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    out = decode_image(encode(Image.new("I;16", (8, 8), 32768), "PNG"))
    assert 120 <= int(out[0, 0, 0]) <= 135


def test_alpha_is_composited_on_white() -> None:
    out = decode_image(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"))
    assert out[0, 0].tolist() == [255, 255, 255]
    out = decode_image(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 255)), "PNG"))
    assert out[0, 0].tolist() == [0, 0, 255]


def test_palette_and_webp_and_bmp_decode() -> None:
    for fmt, image in [("PNG", Image.new("P", (8, 8), 3)), ("WEBP", Image.new("RGB", (8, 8))),
                       ("BMP", Image.new("RGB", (8, 8)))]:
        assert decode_image(encode(image, fmt)).shape == (8, 8, 3)


def test_exif_rotation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape[:2] == (40, 20)


def test_rgba_face_photo_from_the_test_set_decodes(scene) -> None:
    out = decode_image(scene("obama-rgba.png"))
    assert out.shape == (1200, 626, 3)


@pytest.mark.parametrize("array,reason", [
    (np.zeros((0, 0, 3), np.uint8), "bad_array"),
    (np.zeros((10, 10, 2), np.uint8), "bad_array"),
    (np.zeros((10, 10), np.complex64), "bad_array"),
    (np.full((10, 10), np.nan, np.float32), "bad_array"),
    ("not an array", "bad_array"),
])
def test_bad_arrays_are_refused(array: object, reason: str) -> None:
    with pytest.raises(ImageError) as err:
        ensure_frame(array)
    assert err.value.reason == reason


def test_ensure_frame_normalises_common_layouts() -> None:
    assert ensure_frame(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert ensure_frame(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6, 3)
    assert ensure_frame(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert ensure_frame(np.full((5, 6, 3), 65535, np.uint16)).max() == 255
    assert ensure_frame(np.ones((5, 6, 3), np.float32)).max() == 255
    view = np.zeros((10, 10, 3), np.uint8)[:, ::2]
    assert ensure_frame(view).flags["C_CONTIGUOUS"]
