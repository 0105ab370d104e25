"""docs/pickup-codes.md's figures against the implementation and the example config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from station.config import LockoutSection, ShelfConfig
from station.domain import codes
from station.domain.codes import PickupCode, guess_success_per_day, qr_payload
from station.domain.layout import SlotAddress
from station.domain.lockout import LockoutPolicy, scope_delay
from station.flows import guard

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "pickup-codes.md").read_text("utf-8")
EXAMPLE_LOCKOUT = tomllib.loads((ROOT / "examples" / "station.toml").read_text("utf-8"))["lockout"]
FIGURES = {m[1]: float(m[2]) for m in re.finditer(r"^\| `(\w+)` \| ([0-9.e+-]+) \|$", DOC, re.M)}


def fig(name: str) -> float:
    assert name in FIGURES, f"docs/pickup-codes.md has no figure {name}"
    return FIGURES[name]


def test_the_doc_has_its_figures_table() -> None:
    assert len(FIGURES) >= 14


def test_code_format_figures_match_the_implementation() -> None:
    assert fig("random_digits") == codes.RANDOM_DIGITS
    assert fig("max_codes_per_slot") == codes.MAX_CODES_PER_SLOT
    le = [m.le for m in ShelfConfig.model_fields["capacity"].metadata if hasattr(m, "le")]
    assert le == [codes.MAX_CODES_PER_SLOT], "the config must not allow more codes per slot"
    code = PickupCode(SlotAddress(3, 2, 5), "48213307")
    assert str(code) == "3-2-05-48213307" and "3-2-05-48213307" in DOC
    assert code.compact == "0320548213307" and "0320548213307" in DOC


def test_qr_tag_has_the_documented_bits() -> None:
    tag = qr_payload("st", PickupCode(SlotAddress(1, 1, 1), "00000000"), b"k" * 32).rsplit(":", 1)[1]
    assert len(tag) * 4 == fig("qr_tag_bits")


@pytest.mark.parametrize("source", ["example", "defaults"])
def test_lockout_figures_match_the_example_config_and_the_defaults(source: str) -> None:
    lk = EXAMPLE_LOCKOUT if source == "example" else LockoutSection().model_dump()
    for key in ("free_failures", "first_delay_s", "max_delay_s", "daily_failure_cap",
                "otp_tries", "otp_per_phone_per_day"):
        assert fig(key) == lk[key], f"{key}: doc {fig(key)} vs {source} {lk[key]}"


def test_documented_delays_are_the_ones_the_lockout_applies() -> None:
    policy = LockoutPolicy(int(fig("free_failures")), fig("first_delay_s"), fig("max_delay_s"),
                           int(fig("daily_failure_cap")))
    listed = [float(x) for x in re.findall(r"(\d+) s,", DOC.split("doubles the wait")[1][:80])]
    actual = [scope_delay(policy, policy.free_failures + n) for n in range(1, len(listed) + 1)]
    assert listed == actual and listed[:2] == [30.0, 60.0]
    assert scope_delay(policy, 100) == fig("max_delay_s")


def test_guessing_odds_match_and_stay_under_one_in_a_million() -> None:
    per_guess = codes.MAX_CODES_PER_SLOT / 10**codes.RANDOM_DIGITS
    assert per_guess == pytest.approx(fig("per_guess"))
    per_day = guess_success_per_day(failures_per_day=EXAMPLE_LOCKOUT["daily_failure_cap"])
    assert per_day == pytest.approx(fig("per_day"))
    assert per_day == pytest.approx(fig("daily_failure_cap") * fig("per_guess"))
    assert per_day < 1e-6
    assert "20 × 4e-8 = 8e-7 < 1e-6" in DOC


def test_typed_codes_and_one_time_codes_share_the_daily_cap() -> None:
    assert set(guard.CUSTOMER_KINDS) == {"code", "otp"}
    assert "shared by typed pickup codes and one-time codes" in DOC


def test_one_time_code_odds_as_documented(tmp_path: Path, secrets) -> None:
    from tests.flows.harness import make_station, phone, sf_waybill

    st = make_station(tmp_path, secrets)
    st.add_courier()
    st.shelve(sf_waybill(1), phone(1))
    st.core.pickup.request_otp(phone(1))
    otp = st.outbox.messages[-1]["otp"]
    assert len(otp) == fig("otp_digits") and otp.isdigit()
    per_number = fig("otp_tries") * fig("otp_per_phone_per_day") / 10 ** fig("otp_digits")
    assert per_number == pytest.approx(fig("otp_per_number_per_day"))
    per_station = fig("daily_failure_cap") * fig("otp_per_phone_per_day") / 10 ** fig("otp_digits")
    assert per_station == pytest.approx(fig("otp_per_station_per_day"))
    assert "9e-6 per day for that number" in DOC and "victim receives every one-time code by SMS" in DOC
