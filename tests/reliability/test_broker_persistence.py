"""#22.8: the embedded broker (demo, simulator, tests) is configured like production:
persistence on, in its own directory, saved every few seconds (ADR 0084).

What Mosquitto promises, tested exactly: after a clean stop every QoS 1 message queued for a
persistent session is delivered when the session comes back; after SIGKILL, what the last
save held is delivered and what came after it is gone at the broker. End to end with the
real station and firmware: a placement published while the station is down survives a clean
broker restart as the event itself; across a SIGKILL it either survives (if a save caught it)
or is lost at the broker, and then the station's audit of the shelves' signed retained
counts raises `slot.count_mismatch` for that slot, so it is never a silent difference.
Command outcomes do not depend on the broker's memory at all: devices use clean sessions,
the station retries a command until its expiry, and records the outcome either way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, shelve, until
from tests.reliability.test_faults import UnlockRecorder

TOPIC = "ps/v1/st-test/probe/evt"
PHONE = "13900000001"


class Sub:
    """A persistent-session subscriber (clean_session False, QoS 1), like the station."""

    def __init__(self, broker: MosquittoProcess, client_id: str = "probe-station") -> None:
        self.got: list[bytes] = []
        self.ready = threading.Event()
        self.session_present: bool | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)

        def on_connect(client, userdata, flags, rc, props):  # type: ignore[no-untyped-def]
            self.session_present = bool(flags.session_present)
            client.subscribe(TOPIC, qos=1)

        self.c.on_connect = on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = lambda client, userdata, msg: self.got.append(bytes(msg.payload))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert self.ready.wait(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _publish(broker: MosquittoProcess, payloads: list[bytes]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-device", clean_session=True)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish(TOPIC, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(5)  # PUBACKed: the broker has taken responsibility for it
    pub.disconnect()
    pub.loop_stop()


def test_embedded_broker_persists_in_its_own_directory(tmp_path: Path) -> None:
    broker = MosquittoProcess(workdir=tmp_path / "mq")
    conf = broker.write_conf().read_text().splitlines()
    assert "persistence true" in conf
    assert f"persistence_location {tmp_path / 'mq' / 'data'}/" in conf
    assert "autosave_interval 5" in conf
    with broker:
        broker.save()
        assert [p.name for p in broker.data_dir.iterdir()] == ["mosquitto.db"]


def test_a_clean_restart_delivers_every_queued_qos1_message_to_a_persistent_session(tmp_path: Path) -> None:
    with MosquittoProcess(workdir=tmp_path / "mq") as broker:
        sub = Sub(broker)
        sub.close()  # the station is down: messages queue at the broker for its session
        sent = [f"m{n}".encode() for n in range(300)]
        _publish(broker, sent)
        broker.restart()  # SIGTERM: Mosquitto saves everything on the way out
        sub = Sub(broker)
        until(lambda: len(sub.got) >= len(sent), 10, "queued messages after the restart")
        sub.close()
        assert sub.session_present is True
        assert sub.got == sent  # all of them, once each, in order


def test_after_sigkill_what_was_saved_is_delivered_and_what_was_not_is_lost(tmp_path: Path) -> None:
    with MosquittoProcess(workdir=tmp_path / "mq", autosave_interval_s=3600) as broker:
        sub = Sub(broker)
        sub.close()
        saved = [f"saved{n}".encode() for n in range(100)]
        _publish(broker, saved)
        broker.save()  # what an autosave would have done
        unsaved = [f"late{n}".encode() for n in range(100)]
        _publish(broker, unsaved)  # PUBACKed to the device, then the power goes
        broker.kill()
        broker.start()
        sub = Sub(broker)
        until(lambda: len(sub.got) >= len(saved), 10, "the saved messages after SIGKILL")
        threading.Event().wait(0.5)  # a late arrival of the unsaved ones would show here
        sub.close()
        assert sub.got == saved, "exactly the saved messages survive a SIGKILL"


def _sensed(ps: ProcStation, slot: str) -> int:
    return ps.query("SELECT COUNT(*) n FROM events WHERE type = 'slot.sensed' AND subject = ?",
                    (slot,))[0]["n"]


def _mismatches(ps: ProcStation, slot: str) -> int:
    return ps.query("SELECT COUNT(*) n FROM events WHERE type = 'slot.count_mismatch' AND subject = ?",
                    (slot,))[0]["n"]


def test_device_events_and_command_outcomes_across_a_clean_and_a_killed_broker(tmp_path: Path) -> None:
    with ProcStation(tmp_path, mqtt={"shelf_audit_s": 1}) as ps:
        ps.start()
        parcel = shelve(ps, [("SF0000000000001", PHONE)])["SF0000000000001"]
        spare = ["2-1-08", "2-1-09"]  # slots nobody was sent to
        assert parcel["slot"] not in spare

        # clean restart: the event itself is delivered to the station's persistent session
        ps.kill()
        ps.put(spare[0])
        ps.broker.restart()
        ps.start()
        until(lambda: _sensed(ps, spare[0]) == 1, 15, "the put made while the station was down")
        assert _mismatches(ps, spare[0]) == 0

        # SIGKILL: the event was PUBACKed to the shelf and queued for the station; whether it
        # survives depends on whether a save caught it. Either way the room's state reaches
        # the operator: the event itself, or the audit's alarm on the shelf's signed count.
        ps.kill()
        ps.put(spare[1])
        ps.broker.kill()
        ps.broker.start()
        ps.start()
        until(lambda: _sensed(ps, spare[1]) + _mismatches(ps, spare[1]) >= 1, 30,
              "the put made before the SIGKILL, as its event or as a count mismatch")
        how = "event" if _sensed(ps, spare[1]) else "count_mismatch"
        alarms = ps.query("SELECT kind FROM alarms WHERE subject = ? AND acknowledged_at IS NULL", (spare[1],))
        assert alarms, f"an unexplained parcel in {spare[1]} is an open operator alarm ({how})"
        print(f"\nafter SIGKILL the station learnt of the put through: {how}")

        # a command's outcome never depends on the broker's memory (devices use clean
        # sessions; the station retries until expiry): with the broker SIGKILLed the entry is
        # refused and recorded, no command from then runs later, and afterwards it works once
        entry = UnlockRecorder(ps.controller("door-entry"))
        ps.broker.kill()
        res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": parcel["code"]})
        assert res.status_code == 503 and res.json()["error"] in ("door_offline", "door_failed"), res.text
        ps.broker.start()
        until(lambda: set(ps.config.device_ids) <= ps.online_devices(), 20, "devices back")
        assert not entry.unlocks, "the refused entry's command ran after the broker came back"
        res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": parcel["code"]})
        assert res.status_code == 200 and res.json()["door"] == "unlocked", res.text
        assert len(entry.unlocks) == 1
        assert ps.query("SELECT 1 FROM events WHERE type = 'entry.refused'")
        assert ps.verify_log().returncode == 0
