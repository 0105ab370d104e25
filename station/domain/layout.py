"""Slot addresses and the shelf layout.

A slot is shelf + row + column; its printed form is `3-2-05` (column zero-padded to two
digits so printed codes line up on a label and sort as text)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import InvalidSlotAddress

SIZE_ORDER = {"S": 0, "M": 1, "L": 2, "XL": 3}
_ADDRESS_RE = re.compile(r"^\s*(\d{1,2})-(\d)-(\d{1,2})\s*$")


@dataclass(frozen=True, order=True)
class SlotAddress:
    shelf: int
    row: int
    col: int

    def __post_init__(self) -> None:
        if not (1 <= self.shelf <= 99 and 1 <= self.row <= 9 and 1 <= self.col <= 99):
            raise InvalidSlotAddress(
                f"slot {self.shelf}-{self.row}-{self.col} out of range "
                "(shelf 1-99, row 1-9, column 1-99)"
            )

    def __str__(self) -> str:
        return f"{self.shelf}-{self.row}-{self.col:02d}"

    @classmethod
    def parse(cls, text: str) -> SlotAddress:
        if not isinstance(text, str):
            raise InvalidSlotAddress("a slot address is text like 3-2-05")
        if cls is SlotAddress:
            return _parse_slot(text)
        return cls._from_text(text)

    @classmethod
    def _from_text(cls, text: str) -> SlotAddress:
        match = _ADDRESS_RE.match(text)
        if not match:
            raise InvalidSlotAddress(
                f"{text!r} is not a slot address: expected shelf-row-column like 3-2-05"
            )
        return cls(int(match[1]), int(match[2]), int(match[3]))


# Every query the flows make about slots parses the printed addresses it returns (the
# light sync, slot choice and the exit, several times per parcel), and a station has a few
# hundred slots: the addresses are immutable, so each text is parsed once. A bad text
# raises and is never cached.
@functools.lru_cache(maxsize=4096)
def _parse_slot(text: str) -> SlotAddress:
    return SlotAddress._from_text(text)


@dataclass(frozen=True)
class Slot:
    address: SlotAddress
    size: str
    capacity: int
    device: str
    outbound: bool = False


@dataclass(frozen=True)
class ShelfSpec:
    """The layout-relevant part of a shelf's configuration (kept free of pydantic)."""

    number: int
    rows: int
    columns: int
    row_sizes: tuple[str, ...]
    capacity: int
    device: str
    outbound: bool = False


class Layout:
    """All slots of a station, addressable by SlotAddress."""

    def __init__(self, shelves: Iterable[ShelfSpec]) -> None:
        self._slots: dict[SlotAddress, Slot] = {}
        self._shelves: dict[int, ShelfSpec] = {}
        for shelf in shelves:
            self._shelves[shelf.number] = shelf
            for row in range(1, shelf.rows + 1):
                for col in range(1, shelf.columns + 1):
                    addr = SlotAddress(shelf.number, row, col)
                    self._slots[addr] = Slot(
                        addr, shelf.row_sizes[row - 1], shelf.capacity, shelf.device, shelf.outbound
                    )

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots.values())

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, addr: object) -> bool:
        return addr in self._slots

    def slot(self, addr: SlotAddress) -> Slot:
        try:
            return self._slots[addr]
        except KeyError:
            raise InvalidSlotAddress(f"slot {addr} does not exist at this station") from None

    def shelf(self, number: int) -> ShelfSpec:
        return self._shelves[number]

    def shelf_of_device(self, device: str) -> ShelfSpec | None:
        return next((s for s in self._shelves.values() if s.device == device), None)

    @property
    def shelves(self) -> list[ShelfSpec]:
        return list(self._shelves.values())
