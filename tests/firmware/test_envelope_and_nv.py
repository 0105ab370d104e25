"""The shared wire module and the stub NV store, without a broker."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_stubs.nvstore import FileNvStore
from station.devices import envelope as env
from station.devices.envelope import EnvelopeError

KEY = b"k" * 32


def test_canonical_bytes_do_not_depend_on_key_order():
    assert env.canonical_bytes({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == \
        env.canonical_bytes({"a": [1, {"c": "é", "d": 2}], "b": 1})
    assert env.canonical_bytes({"a": "é"}) == '{"a":"é"}'.encode()


def test_a_signed_command_round_trips_and_any_change_breaks_it():
    cmd = env.build_command(key=KEY, device="door-entry", seq=5, op="unlock", args={}, ttl_s=5)
    assert env.parse_command(env.encode(cmd), KEY)["cmd_id"] == cmd["cmd_id"]
    for name, value in (("seq", 6), ("device", "door-exit"), ("expires_at", 9e9), ("args", {"pulse_s": 60})):
        try:
            env.parse_command(env.encode({**cmd, name: value}), KEY)
        except EnvelopeError as exc:
            assert exc.reason == "bad_signature"
        else:
            raise AssertionError(f"changing {name} went unnoticed")


def test_size_is_checked_before_parsing():
    try:
        env.decode(b" " * (env.MAX_PAYLOAD + 1))
    except EnvelopeError as exc:
        assert exc.reason == "too_large"
    else:
        raise AssertionError("oversized payload accepted")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=20).map(lambda o: json.dumps(o).encode())))
def test_parse_command_only_ever_raises_envelope_errors(payload):
    try:
        env.parse_command(payload, KEY)
    except EnvelopeError as exc:
        assert exc.reason in env.REFUSAL_REASONS


def test_topics_round_trip():
    assert env.parse_topic(env.topic("st", "shelf-1", "evt")) == ("st", "shelf-1", "evt")
    assert env.parse_topic("ps/v1/st/shelf-1/other") is None


def test_nv_record_survives_reopen_and_never_goes_back(tmp_path):
    nv = FileNvStore(tmp_path / "nv.json")
    assert nv.next_boot() == 1
    nv.set_last_seq(100)
    nv.set_last_seq(50)
    again = FileNvStore(tmp_path / "nv.json")
    assert again.last_seq == 100 and again.next_boot() == 2
    assert not (tmp_path / "nv.tmp").exists()
