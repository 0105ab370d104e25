"""Snapshots pruned by age and by a disk budget, the operator alarmed before the disk fills,
new shelving refused (clearly, before any transaction) below the reserve (#14.13, #16.3).

Five face attempts once wrote 40 MiB that no code ever removed (`snapshot_retention_days`
was read by nobody). The last test runs on a real 20 MiB tmpfs where the machine lets us
mount one (root), so the free space is the kernel's, not a number we made up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from station.config import Secrets
from station.flows.housekeeping import Housekeeper
from station.store.db import StoreLow
from station.store.space import MB, DiskBudget
from station.vision.snapshots import SnapshotStore
from tests.flows.harness import config_for, make_station, phone, sf_waybill
from tests.support.tmpfs import needs_mount, small_tmpfs

DAY = 86400.0


def jpeg(n: int, size: int = 100_000) -> bytes:
    return b"\xff\xd8\xff" + n.to_bytes(4, "big") + os.urandom(size - 7)


def keeper_for(st, snapshots: SnapshotStore, probe) -> Housekeeper:  # type: ignore[no-untyped-def]
    cfg = st.config.disk
    budget = DiskBudget([st.store.path.parent, snapshots.directory], cfg.alarm_free_mb, cfg.refuse_free_mb,
                        probe=probe)
    st.store.space_guard = budget.refusal
    return Housekeeper(st.config, st.store, snapshots, budget, clock=st.clock)


def alarms(st, kind: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return st.store.query("SELECT * FROM alarms WHERE kind = ?", (kind,))


def test_snapshots_are_pruned_by_age_and_by_their_budget(tmp_path: Path, secrets: Secrets) -> None:
    config = config_for(tmp_path).model_copy(deep=True)
    config = config.model_copy(update={"disk": config.disk.model_copy(update={"snapshots_max_mb": 1})})
    st = make_station(tmp_path, secrets, config=config)
    snaps = SnapshotStore(tmp_path / "snaps")
    now = st.clock()
    refs = []
    for i in range(20):  # 20 x 100 kB, one a day, the oldest 40 days ago
        ref = snaps.save(jpeg(i))
        assert ref
        t = now - (40 - i * 2) * DAY
        os.utime(snaps.path(ref), (t, t))
        refs.append(ref)
    keeper = keeper_for(st, snaps, probe=lambda p: 10_000 * MB)
    keeper.check_disk()
    left = [r for r in refs if snaps.path(r).exists()]
    # older than 30 days: the first 6 (40, 38, ..., 30 days is not older) ... then the budget of 1 MiB
    count, size = snaps.usage()
    assert size <= 1 * MB and count == len(left)
    assert left == refs[-count:], "the newest are kept, the oldest go first"
    pruned = st.store.query("SELECT data FROM events WHERE type = 'snapshots.pruned'")
    assert len(pruned) == 1
    assert not alarms(st, "disk.low")  # plenty of room: no alarm
    st.store.close()


def test_a_low_disk_alarms_once_and_frees_room_from_the_oldest_snapshots(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    snaps = SnapshotStore(tmp_path / "snaps")
    for i in range(30):
        ref = snaps.save(jpeg(i, 1 * MB))
        t = st.clock() - (30 - i) * 3600
        os.utime(snaps.path(ref), (t, t))  # newer than the retention: only the budget removes them
    alarm_mb = st.config.disk.alarm_free_mb
    base = (alarm_mb - 10) * MB  # 10 MB short of the alarm threshold, counted with the snapshots gone

    def probe(_: Path) -> int:
        return base + (30 * MB - snaps.usage()[1])

    keeper = keeper_for(st, snaps, probe)
    status = keeper.check_disk()
    assert status.level == "ok"  # 10 snapshots (the oldest) made the room back
    assert snaps.usage()[0] == 20
    assert len(alarms(st, "disk.low")) == 1
    # the room goes again: still one open alarm, not one per check
    base -= 5 * MB
    for _ in range(3):
        keeper.check_disk()
    assert len(alarms(st, "disk.low")) == 1
    levels = [json.loads(r["data"]) for r in st.store.query("SELECT data FROM events WHERE type = 'disk.space'")]
    assert [(d["found"], d["level"]) for d in levels] == [("low", "ok")]  # found low, made ok
    assert snaps.usage()[0] == 15  # each later check took the next oldest
    st.store.close()


def test_below_the_reserve_new_shelving_is_refused_before_anything_starts(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.core.couriers.add("c1", "SF", "Li", "1234")
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    free = {"bytes": 10_000 * MB}
    keeper = keeper_for(st, SnapshotStore(tmp_path / "snaps"), lambda p: free["bytes"])
    st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")  # room: accepted
    free["bytes"] = (st.config.disk.refuse_free_mb - 1) * MB
    keeper.check_disk()
    before = st.store.last_seq
    with pytest.raises(StoreLow, match="nearly full.*new parcels are refused"):
        st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    assert st.store.last_seq == before  # nothing half done
    assert len(alarms(st, "disk.critical")) == 1
    free["bytes"] = 10_000 * MB  # space freed: shelving goes on by itself
    st.core.shelving.scan(sid, sf_waybill(3), phone(3), "S")
    st.store.close()


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    with small_tmpfs(tmp_path / "tmpfs", 20) as mount:
        yield mount


@needs_mount
def test_on_a_real_small_disk_snapshots_go_first_and_shelving_stops_before_the_disk_is_full(
        tmp_path: Path, secrets: Secrets, tmpfs: Path) -> None:
    """Database and snapshots on a 20 MiB tmpfs; alarm below 8 MiB free, refusal below 3 MiB."""
    config = config_for(tmpfs)
    config = config.model_copy(update={"disk": config.disk.model_copy(
        update={"alarm_free_mb": 8, "refuse_free_mb": 3, "snapshots_max_mb": 100})})
    st = make_station(tmpfs, secrets, config=config)
    st.core.couriers.add("c1", "SF", "Li", "1234")
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    snaps = SnapshotStore(tmpfs / "snaps")
    cfg = config.disk
    budget = DiskBudget([tmpfs, snaps.directory], cfg.alarm_free_mb, cfg.refuse_free_mb)
    st.store.space_guard = budget.refusal
    keeper = Housekeeper(config, st.store, snaps, budget, clock=st.clock)
    refs = [snaps.save(jpeg(i, 1 * MB)) for i in range(14)]  # 14 MiB of camera frames
    assert budget.status().level != "ok"
    keeper.check_disk()
    assert budget.status().level == "ok" and len(alarms(st, "disk.low")) == 1
    assert not snaps.path(refs[0]).exists() and snaps.path(refs[-1]).exists()
    st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    # something else fills the disk (logs, an operator's copy): below the reserve
    snaps.prune_to(0)  # nothing left for the budget to prune
    filler = tmpfs / "filler.bin"
    room = shutil.disk_usage(tmpfs).free
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (room - 2 * MB))
    keeper.check_disk()
    with pytest.raises(StoreLow, match="nearly full"):
        st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    assert len(alarms(st, "disk.critical")) == 1
    filler.unlink()
    keeper.check_disk()
    st.core.shelving.scan(sid, sf_waybill(3), phone(3), "S")
    from station.store.archive import verify_log

    with st.store.snapshot() as conn:
        assert verify_log(conn).ok
    st.store.close()


def test_archives_go_oldest_first_only_when_configured_and_verify_still_knows_them(
        tmp_path: Path, secrets: Secrets) -> None:
    from station.store.archive import verify_log
    from station.store.eventlog import Event
    from station.store.retention import Retention

    for allowed in (False, True):
        base = tmp_path / str(allowed)
        config = config_for(base)
        config = config.model_copy(update={"retention": config.retention.model_copy(update={
            "enabled": True, "archive_dir": str(base / "archive"), "prune_archives_when_low": allowed})})
        st = make_station(base, secrets, config=config)
        for _day in range(6):
            with st.store.transaction() as tx:
                for i in range(200):
                    tx.emit(Event("note.test", f"s{i}", "t", {"pad": os.urandom(200).hex()}))
            st.clock.advance(DAY)
        retention = Retention(st.store, base / "archive", keep_days=1, segment_events=200)
        retention.run(st.clock())
        segments = sorted((base / "archive").iterdir())
        assert len(segments) >= 4
        first_size = segments[0].stat().st_size
        snaps = SnapshotStore(base / "snaps")
        alarm = config.disk.alarm_free_mb * MB

        def probe(_: Path, segs: list[Path] = segments, short: int = alarm - first_size) -> int:
            gone = sum(s.stat().st_size for s in segs if not s.exists())  # short by one segment
            return short + gone

        budget = DiskBudget([base], config.disk.alarm_free_mb, config.disk.refuse_free_mb, probe=probe)
        keeper = Housekeeper(config, st.store, snaps, budget, retention=retention, clock=st.clock)
        keeper.check_disk()
        left = sorted((base / "archive").iterdir())
        if not allowed:
            assert left == segments  # never without the operator's say-so
        else:
            assert left == segments[1:]  # the oldest, and only as much as needed
            assert st.store.query("SELECT 1 FROM events WHERE type = 'log.archive_deleted'")
            with st.store.snapshot() as conn:
                result = verify_log(conn, base / "archive")
            assert result.ok and any("deleted to free disk" in n for n in result.notes), result
        st.store.close()


def test_a_disk_budget_with_the_thresholds_the_wrong_way_round_is_refused(tmp_path: Path) -> None:
    import tomllib

    from station.config import ConfigError, parse_config

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "examples" / "station.toml").read_text())
    data["disk"] = {"alarm_free_mb": 100, "refuse_free_mb": 200}
    with pytest.raises(ConfigError, match="disk.*refuse_free_mb must be below alarm_free_mb"):
        parse_config(data, "station.toml")
    data["disk"] = {"alarm_free_mb": 100, "refuse_free_mb": 20}
    data["retention"] = {"enabled": True, "keep_days": 0}
    with pytest.raises(ConfigError, match="retention.keep_days"):
        parse_config(data, "station.toml")
