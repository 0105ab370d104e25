"""Turning untrusted bytes and arrays into frames the vision code can rely on.

Images reach the station from couriers' phones (enrolment), IP cameras and the kiosk. Any of
them can be empty, cut short, a format we never meant to read, or a tiny file that claims to
be 10,000 x 10,000 pixels and would take gigabytes to decode. Everything downstream assumes a
contiguous uint8 BGR array of sane size, so this module is the one gate: it refuses with an
`ImageError` whose `reason` is a stable code the API can map to a message, and never lets a
decoder exception or a memory blow-up reach the service.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 4096 x 4096: above any face or document camera we support; an enrolment photo from a phone
# (12-50 MP) should be resized by the app before upload, and the refusal tells it so.
DEFAULT_MAX_PIXELS: Final = 4096 * 4096
MAX_BYTES: Final = 32 * 1024 * 1024
# Formats a camera or phone actually sends. TIFF, GIF, ICO, PSD and friends are refused:
# each extra decoder is extra attack surface for no use.
SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG", "BMP", "WEBP"})


class ImageError(ValueError):
    """An image the station will not use; `reason` is a stable code, the message says why.

    Reasons: empty, too_many_bytes, unsupported_format, corrupt, truncated, too_large,
    bad_array.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _sniff(data: bytes) -> str | None:
    """Format from the magic bytes, so a renamed PDF is refused before any decoder runs."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP bytes into a uint8 BGR frame (H, W, 3).

    The pixel count is read from the header and checked before any pixel is decoded, so a
    decompression bomb costs nothing. EXIF orientation is applied (phones store portraits
    sideways and flag it), grey and palette images become BGR, alpha is composited on white,
    16-bit images are scaled to 8 bits. Raises ImageError.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("bad_array", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("empty", "no bytes received")
    if len(data) > MAX_BYTES:
        raise ImageError("too_many_bytes", f"{len(data)} bytes, limit {MAX_BYTES}")
    kind = _sniff(data)
    if kind is None:
        raise ImageError(
            "unsupported_format",
            f"not a JPEG, PNG, BMP or WebP image (starts with {data[:8]!r})",
        )
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 MP; we make our own, stricter decision just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise ImageError(reason, f"{kind} header unreadable: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError("unsupported_format", f"{image.format} images are not accepted")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError("corrupt", f"{kind} header gives {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageError(
            "too_large",
            f"{width}x{height} pixels ({width * height:,}) exceeds {max_pixels:,}; "
            "resize before sending",
        )
    _check_complete(kind, data, image.size)
    try:
        image.load()
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncat" in text.lower() or "broken data" in text else "corrupt"
        raise ImageError(reason, f"{kind} data unreadable: {text}") from None
    except (SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError("corrupt", f"{kind} data unreadable: {exc}") from None
    try:
        image = ImageOps.exif_transpose(image) or image  # type: ignore[assignment]
    except (OSError, ValueError, SyntaxError):
        pass  # a broken EXIF block is no reason to refuse the pixels
    return _pil_to_bgr(image)


def _check_complete(kind: str, data: bytes, size: tuple[int, int]) -> None:
    """Refuse a cut-off file ourselves instead of trusting PIL to raise: PIL pads truncated
    images with grey when the process-wide ImageFile.LOAD_TRUNCATED_IMAGES is set, and
    importing face_recognition sets it (face_recognition/api.py, line 15)."""
    if kind == "JPEG" and b"\xff\xd9" not in data[-64:]:
        raise ImageError("truncated", "JPEG ends before its end-of-image marker")
    if kind == "PNG":
        try:
            Image.open(io.BytesIO(data)).verify()  # walks the chunks and their CRCs
        except (OSError, SyntaxError, ValueError) as exc:
            reason = "truncated" if "truncat" in str(exc).lower() else "corrupt"
            raise ImageError(reason, f"PNG data unreadable: {exc}") from None
    if kind == "BMP" and len(data) >= 34:
        offset = int.from_bytes(data[10:14], "little")
        bpp = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
        if compression == 0 and bpp:
            stride = (size[0] * bpp + 31) // 32 * 4
            if len(data) < offset + stride * size[1]:
                raise ImageError("truncated", "BMP holds fewer pixel rows than its header says")


def _pil_to_bgr(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale by the actual range, not a blind clip to 255
        arr = np.asarray(image, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        gray = np.clip(arr * (255.0 / (65535.0 if top > 255 else 255.0)), 0, 255)
        return ensure_frame(gray.astype(np.uint8))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(rgb[..., ::-1].round().astype(np.uint8))
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def ensure_frame(array: object) -> np.ndarray:
    """Normalise an in-process array (camera frame, test image) to contiguous uint8 BGR.

    Accepts (H, W) grey, (H, W, 1), (H, W, 3) BGR and (H, W, 4) BGRA, as uint8, uint16 (scaled)
    or float in [0, 1]. Raises ImageError("bad_array") for anything else, so a broken camera
    driver handing over garbage is refused rather than crashing dlib.
    """
    if not isinstance(array, np.ndarray):
        raise ImageError("bad_array", f"expected a numpy array, got {type(array).__name__}")
    arr = array
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise ImageError("bad_array", f"shape {arr.shape} is not an image")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ImageError("bad_array", f"{arr.shape[2]} channels; expected 1, 3 or 4")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError("bad_array", f"shape {arr.shape} is too small")
    if arr.shape[0] * arr.shape[1] > DEFAULT_MAX_PIXELS * 4:
        raise ImageError("too_large", f"shape {arr.shape} is larger than any camera we use")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ImageError("bad_array", "array contains NaN or infinity")
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    else:
        raise ImageError("bad_array", f"dtype {arr.dtype} is not an image type")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)
