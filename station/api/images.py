"""Image uploads: size-limited before anything decodes them."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request

from station.flows.errors import FlowError

MAX_IMAGE_BYTES = 8 * 1024 * 1024
# a body of base64 frames (read_frames_json) holding at most MAX_IMAGE_BYTES of images
MAX_FRAMES_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 1024


async def read_image(request: Request) -> bytes:
    """The raw body of an image upload (image/jpeg, image/png ...), at most 8 MiB."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise FlowError("the image is larger than 8 MiB", code="image_too_large", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_IMAGE_BYTES:
            raise FlowError("the image is larger than 8 MiB", code="image_too_large", status=413)
    if not body:
        raise FlowError("the image is empty", code="image_empty", status=422)
    return bytes(body)


MAX_FRAMES = 12


async def read_frames_json(request: Request) -> list[bytes]:
    """`{"frames": [base64 JPEG/PNG, ...]}`: a short sequence from a camera the kiosk owns
    (liveness needs several frames), at most 12 and 8 MiB in all."""
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_FRAMES_BODY_BYTES:
            raise FlowError("the frames are larger than 8 MiB", code="image_too_large", status=413)
    try:
        body = json.loads(raw)
        items = body["frames"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_FRAMES:
            raise ValueError
        frames = [base64.b64decode(item, validate=True) for item in items]
    # RecursionError: JSON nested deeper than the parser goes (a hostile body, not a 500)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise FlowError(f'send {{"frames": [1-{MAX_FRAMES} base64 images]}}',
                        code="invalid_request", status=422) from None
    if not all(frames):
        raise FlowError("an image is empty", code="image_empty", status=422)
    return frames
