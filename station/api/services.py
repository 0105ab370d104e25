"""What the routers reach through `request.app.state.services`: built by bootstrap.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from station.flows.core import StationCore


@dataclass
class Services:
    core: StationCore
    # image -> list of decoded texts (waybills, QR payloads); None where vision is not wired
    decode_codes: Callable[[bytes], list[str]] | None = None
    # image list -> face decision dict {courier_id|None, distance, live, reason}
    verify_face: Callable[[list[bytes]], dict[str, Any]] | None = None
    grab_face_frames: Callable[[], list[bytes]] | None = None
    # the document camera's newest frame, waiting up to `timeout` s for one (default 3 s)
    grab_document_frame: Callable[..., bytes] | None = None
    enrol_face: Callable[[str, list[bytes]], dict[str, Any]] | None = None
    save_snapshot: Callable[[bytes], str | None] | None = None
    snapshot_load: Callable[[str], bytes | None] | None = None  # decrypted JPEG, None: pruned
    # an alarm clip's (offset s, JPEG) frames, decrypted; None: pruned or never written
    clip_load: Callable[[str], list[tuple[float, bytes]] | None] | None = None
    device_status: Callable[[], dict[str, Any]] = field(default=lambda: {})
    # (method, seconds) of each customer entry, for the metrics; a no-op where none are kept
    observe_entry: Callable[[str, float], None] = field(default=lambda method, seconds: None)


async def services(request: Request) -> Services:
    """A coroutine: FastAPI runs a plain `def` dependency in the thread pool (auth.require)."""
    return request.app.state.services  # type: ignore[no-any-return]
