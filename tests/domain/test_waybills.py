from __future__ import annotations

import pytest

from station.domain.errors import UnknownCarrier
from station.domain.waybills import Carrier, CarrierBook

CARRIERS = [Carrier("SF", r"^SF\d{13}$", r"^SFS\d{6}$"), Carrier("ZTO", r"^ZT\d{12}$")]


def test_carrier_is_told_by_its_waybill_pattern() -> None:
    book = CarrierBook(CARRIERS)
    assert book.carrier_of("SF1234567890123").name == "SF"
    assert book.carrier_of(" ZT123456789012 ").name == "ZTO"


@pytest.mark.parametrize("waybill", ["", "   ", "SF123", "XX1234567890123", None])
def test_unknown_waybill_is_refused(waybill: object) -> None:
    with pytest.raises(UnknownCarrier):
        CarrierBook(CARRIERS).carrier_of(waybill)  # type: ignore[arg-type]


def test_ambiguous_waybill_names_both_carriers() -> None:
    book = CarrierBook([Carrier("A", r"^X\d+$"), Carrier("B", r"^X\d{3}$")])
    with pytest.raises(UnknownCarrier, match="A, B"):
        book.carrier_of("X123")


def test_send_codes_work_when_carriers_come_from_a_generator() -> None:
    """Regression: the book iterated its argument twice, so a generator (as
    flows.context.carriers_from_config passes) left no send-code patterns at all."""
    book = CarrierBook(c for c in CARRIERS)
    assert book.carrier_of_send_code("SFS123456").name == "SF"
    assert book.carrier_of("SF1234567890123").name == "SF"
    with pytest.raises(UnknownCarrier):
        book.carrier_of_send_code("ZTS123456")
