"""What the shelves should show, as a pure function of the station's state.

The lights are never "remembered" separately: after every change (and after a restart) the
station recomputes this map from the database and sends it to each shelf as its complete
desired state. A slot is therefore lit only while the database says someone should go to
it — the rule behind "zero wrong slots lit"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .colours import ALARM_RED
from .layout import SlotAddress

# colours one slot can show in turn (the lights.set contract, docs/asyncapi.yaml)
MAX_COLOURS = 4


@dataclass(frozen=True)
class LightSpec:
    colours: tuple[str, ...]
    pattern: str = "solid"  # solid | blink | alternate
    ttl_s: float = 600.0


@dataclass(frozen=True)
class SlotClaim:
    """Somebody should go to `slot`, shown in `colour`, until `until` (epoch seconds)."""

    slot: SlotAddress
    colour: str
    until: float
    blink: bool = False


def compose(
    claims: Iterable[SlotClaim],
    alarms: Iterable[tuple[SlotAddress, float]],
    now: float,
    max_ttl_s: float,
) -> dict[SlotAddress, LightSpec]:
    """Merge claims per slot. One claim: its colour; several: alternate between their
    colours (two customers at one slot each see theirs). An alarm on a slot nobody is sent
    to blinks red; on a slot somebody is sent to, red alternates with their colours, so a
    customer whose slot had a stranger's hand in it still sees their colour (ADR 0019).
    TTLs end with the claim, so a lost "off" never outlives the reason for the light."""
    per_slot: dict[SlotAddress, list[SlotClaim]] = {}
    for claim in claims:
        if claim.until > now:
            per_slot.setdefault(claim.slot, []).append(claim)
    result: dict[SlotAddress, LightSpec] = {}
    for slot, group in per_slot.items():
        colours = tuple(dict.fromkeys(c.colour for c in sorted(group, key=lambda c: c.colour)))
        ttl = min(max(max(c.until for c in group) - now, 1.0), max_ttl_s)
        if len(colours) > 1:
            result[slot] = LightSpec(colours, "alternate", ttl)
        else:
            result[slot] = LightSpec(colours, "blink" if group[0].blink else "solid", ttl)
    for slot, until in alarms:
        if until <= now:
            continue
        ttl = min(max(until - now, 1.0), max_ttl_s)
        claimed = result.get(slot)
        if claimed is None:
            result[slot] = LightSpec((ALARM_RED,), "blink", ttl)
        else:  # the claim's own TTL may outlast the alarm: the shelf re-sends when it ends
            colours = (ALARM_RED, *claimed.colours)[:MAX_COLOURS]
            result[slot] = LightSpec(colours, "alternate", min(ttl, claimed.ttl_s))
    return result
