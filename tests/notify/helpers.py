"""Notifications as the flows will build them."""

from __future__ import annotations

from station.notify import Notification

PHONE = "13812345678"


def pickup(n: int, phone: str = PHONE) -> Notification:
    """Pickup code number n: a distinct code per n so the db can be searched for each."""
    return Notification.pickup_code(
        phone=phone,
        code=f"1-2-03-{48210000 + n:08d}",
        qr=f"PS1:st-test:10203{48210000 + n:08d}",
        station_name="Riverside Parcel Room",
        address="12 Riverside Road, Hangzhou",
        deadline_iso="2026-12-01T10:00:00Z",
        waybill_tail=f"{n % 10000:04d}",
    )
