"""The simulated room's index of who holds what agrees with its parcels at every step: each
exit asks it (the invariant "nobody leaves with a parcel not theirs"), so a wrong index
would hide a foreign parcel let out. A random walk of adds, places, lifts and removes is
checked against a walk over every parcel."""

from __future__ import annotations

import random

from shelf_sim.world import Room


def _held_by_walk(room: Room, holder: str) -> set[str]:
    return {w for w, p in room.parcels.items() if p.slot is None and p.holder == holder}


def _wrong_hands_walk(room: Room) -> set[str]:
    return {w for w, p in room.parcels.items() if p.slot is None and p.holder not in (None, p.phone)}


def test_who_holds_what_matches_the_parcels_through_a_random_walk() -> None:
    rng = random.Random(5)
    room = Room()
    people = [f"1380000000{n}" for n in range(5)] + ["c1", "c2"]
    slots = [f"1-1-0{n}" for n in range(1, 6)]
    for step in range(3000):
        waybills = list(room.parcels)
        op = rng.random()
        if op < 0.2 or not waybills:
            room.add(f"SF{rng.randrange(60):013d}", rng.choice(people[:5]), "S", rng.choice(people))
        else:
            w = rng.choice(waybills)
            if op < 0.5:
                if room.parcels[w].slot is None:
                    room.place(w, rng.choice(slots))
            elif op < 0.8:
                room.lift(w, rng.choice(people))
            else:
                room.remove(w, rng.choice(people))
        for holder in people:
            assert set(room.held_by(holder)) == _held_by_walk(room, holder), (step, holder)
        assert {p.waybill for p in room.in_wrong_hands()} == _wrong_hands_walk(room), step
