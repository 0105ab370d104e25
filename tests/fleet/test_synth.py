"""`fleet synth` writes what real stations would forward: every synthesized event passes the
fleet's own edge check (the station's canonical row and hash recomputed), and its fast
canonical forms equal the station's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import parse_message
from fleet.synth import ChainWriter, _fast_hash, _fast_iso, _fast_json, station_stream
from station.store.eventlog import canonical_json, row_hash, utc_iso

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
values = st.one_of(text, st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                   st.booleans(), st.none(), st.lists(text, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(text, values, max_size=6), st.floats(1e9, 2e9), text, st.one_of(st.none(), text))
def test_fast_forms_equal_the_stations(data: dict, at: float, subject: str, snapshot: str | None) -> None:
    assert _fast_json(data) == canonical_json(data)
    assert _fast_iso(at) == utc_iso(at)
    dj = canonical_json(data)
    assert _fast_hash(7, utc_iso(at), "t.x", "a", subject, dj, snapshot, "0" * 64) == \
        row_hash(7, utc_iso(at), "t.x", "a", subject, dj, snapshot, "0" * 64)


def test_a_synthesized_stream_passes_the_fleets_edge_check() -> None:
    w = ChainWriter("st-syn")
    prev = "0" * 64
    n = 0
    for rec in station_stream("st-syn", 0.5, 1000, 3):
        ev = parse_message(w.payload(rec), "st-syn")
        assert ev.prev_hash == prev
        prev, n = ev.hash, n + 1
    assert n >= 500
