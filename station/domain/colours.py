"""Colours for concurrent customer sessions.

Red is kept for alarms (a parcel lifted from the wrong slot) and white for couriers, so
neither is in the customer palette. The eight colours are far apart in hue so customers
standing side by side can tell their slots apart."""

from __future__ import annotations

from collections.abc import Iterable

ALARM_RED = "#FF0000"
COURIER_WHITE = "#FFFFFF"
PALETTE: tuple[tuple[str, str, str], ...] = (
    # (hex, English, Chinese)
    ("#00C853", "green", "绿色"),
    ("#2962FF", "blue", "蓝色"),
    ("#FFD600", "yellow", "黄色"),
    ("#AA00FF", "purple", "紫色"),
    ("#00B8D4", "cyan", "青色"),
    ("#FF6D00", "orange", "橙色"),
    ("#F50057", "pink", "粉色"),
    ("#76FF03", "lime", "青柠色"),
)
PALETTE_HEX = tuple(p[0] for p in PALETTE)


def allocate_colour(in_use: Iterable[str]) -> str:
    """A colour no live session has, while one is free; else the least used one."""
    counts = {c: 0 for c in PALETTE_HEX}
    for colour in in_use:
        if colour in counts:
            counts[colour] += 1
    return min(PALETTE_HEX, key=lambda c: (counts[c], PALETTE_HEX.index(c)))


def colour_name(hex_colour: str, lang: str = "en") -> str:
    for hexc, en, zh in PALETTE:
        if hexc == hex_colour:
            return zh if lang == "zh" else en
    return hex_colour
