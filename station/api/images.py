"""Image uploads: size-limited before anything decodes them."""

from __future__ import annotations

from fastapi import Request

from station.flows.errors import FlowError

MAX_IMAGE_BYTES = 8 * 1024 * 1024


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
