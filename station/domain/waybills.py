"""Carriers are told apart by their waybill patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UnknownCarrier


@dataclass(frozen=True)
class Carrier:
    name: str
    pattern: str
    send_code_pattern: str | None = None


class CarrierBook:
    def __init__(self, carriers: Iterable[Carrier]) -> None:
        carriers = list(carriers)  # iterated twice below: a generator would leave _send empty
        self._carriers = [(c, re.compile(c.pattern)) for c in carriers]
        self._send = [
            (c, re.compile(c.send_code_pattern)) for c in carriers if c.send_code_pattern
        ]

    def carrier_of(self, waybill: str) -> Carrier:
        text = waybill.strip() if isinstance(waybill, str) else ""
        if not text:
            raise UnknownCarrier("empty waybill")
        matches = [c for c, rx in self._carriers if rx.fullmatch(text)]
        if not matches:
            raise UnknownCarrier(f"waybill {text!r} matches no carrier of this station")
        if len(matches) > 1:
            names = ", ".join(c.name for c in matches)
            raise UnknownCarrier(f"waybill {text!r} is ambiguous between {names}")
        return matches[0]

    def carrier_of_send_code(self, code: str) -> Carrier:
        matches = [c for c, rx in self._send if rx.fullmatch(code.strip())]
        if len(matches) != 1:
            raise UnknownCarrier(f"send code {code!r} matches no carrier of this station")
        return matches[0]

    def is_waybill(self, text: str) -> bool:
        try:
            self.carrier_of(text)
        except UnknownCarrier:
            return False
        return True

    @property
    def names(self) -> list[str]:
        return [c.name for c, _ in self._carriers]
