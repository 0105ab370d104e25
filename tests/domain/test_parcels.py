from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.domain.errors import IllegalTransition
from station.domain.parcels import ON_SHELF, TRANSITIONS, WAITING, ParcelAction, ParcelState, transition

S, A = ParcelState, ParcelAction

# The lifecycle of the issue, written out independently of the implementation's table.
SPEC = {
    (S.SHELVED, A.PICK_UP): S.PICKED_UP,
    (S.SHELVED, A.EXPIRE): S.EXPIRED,
    (S.SHELVED, A.RECALL): S.RECALLED,
    (S.SHELVED, A.MARK_MISSING): S.MISSING,
    (S.EXPIRED, A.RETURN): S.RETURNED,
    (S.RECALLED, A.RETURN): S.RETURNED,
    (S.EXPIRED, A.MARK_MISSING): S.MISSING,
    (S.RECALLED, A.MARK_MISSING): S.MISSING,
    (S.MISSING, A.FOUND): S.SHELVED,
    (S.DROPPED_OFF, A.COLLECT): S.COLLECTED,
    (S.DROPPED_OFF, A.MARK_MISSING): S.OUTBOUND_MISSING,
    (S.OUTBOUND_MISSING, A.FOUND): S.DROPPED_OFF,
    # issue #19.4: refused at the kiosk, it stays in its slot until the carrier takes it back
    (S.SHELVED, A.REFUSE): S.REFUSED,
    (S.REFUSED, A.RETURN): S.RETURNED,
    (S.REFUSED, A.MARK_MISSING): S.MISSING,
}
ALL_PAIRS = list(itertools.product(ParcelState, ParcelAction))


def test_the_transition_table_is_the_specified_lifecycle() -> None:
    assert TRANSITIONS == SPEC


@pytest.mark.parametrize("state,action", [p for p in ALL_PAIRS if p in SPEC])
def test_legal_transitions_are_allowed(state: ParcelState, action: ParcelAction) -> None:
    assert transition("p1", state, action) == SPEC[(state, action)]
    assert transition("p1", state.value, action.value) == SPEC[(state, action)]


@pytest.mark.parametrize("state,action", [p for p in ALL_PAIRS if p not in SPEC])
def test_every_illegal_pair_is_refused_with_illegal_transition(state: ParcelState, action: ParcelAction) -> None:
    with pytest.raises(IllegalTransition) as exc:
        transition("p1", state, action)
    assert (exc.value.parcel_id, exc.value.state, exc.value.event) == ("p1", state.value, action.value)
    assert exc.value.code == "illegal_transition"


@pytest.mark.parametrize("state,action", [("shelved", "teleport"), ("lost", "pick_up"), ("", "")])
def test_unknown_states_and_actions_are_illegal_transitions_too(state: str, action: str) -> None:
    with pytest.raises(IllegalTransition):
        transition("p1", state, action)


@pytest.mark.parametrize("final", [S.PICKED_UP, S.RETURNED, S.COLLECTED])
def test_final_states_accept_nothing(final: ParcelState) -> None:
    for action in ParcelAction:
        with pytest.raises(IllegalTransition):
            transition("p1", final, action)


@given(st.sampled_from([S.SHELVED, S.DROPPED_OFF]), st.lists(st.sampled_from(list(ParcelAction)), max_size=30))
def test_any_action_sequence_either_follows_the_table_or_is_refused_without_change(
        start: ParcelState, actions: list[ParcelAction]) -> None:
    state = start
    for action in actions:
        try:
            nxt = transition("p", state, action)
        except IllegalTransition:
            assert (state, action) not in SPEC
            continue
        assert SPEC[(state, action)] == nxt
        state = nxt


def test_an_outbound_parcel_found_again_cannot_be_picked_up_by_a_customer() -> None:
    state = transition("p", S.DROPPED_OFF, A.MARK_MISSING)
    state = transition("p", state, A.FOUND)
    assert state == S.DROPPED_OFF


def test_only_shelved_parcels_open_the_door_and_on_shelf_states_hold_a_slot() -> None:
    assert {S.SHELVED} == WAITING
    assert {S.SHELVED, S.EXPIRED, S.RECALLED, S.DROPPED_OFF, S.REFUSED} == ON_SHELF
