"""Bad configuration and secrets files: each refused with the file, the key and the fault."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from station.config import (
    ConfigError,
    SenderConfig,
    dump_config_toml,
    load_config,
    load_secrets,
    write_new_secrets,
)
from tests.conftest import EXAMPLE_CONFIG

EXAMPLE = EXAMPLE_CONFIG.read_text("utf-8")


def write(tmp_path: Path, text: str, name: str = "station.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def sub(old: str, new: str, count: int = 1) -> str:
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, count)


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return str(exc.value)


def test_the_example_config_loads() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    assert cfg.station.id == "st-demo" and len(cfg.shelves) == 3
    assert cfg.shelf_devices["shelf-out"].outbound


# (edit of the example, key named in the message, fault named in the message)
BAD = {
    "wrong_type": (("rows = 5", 'rows = "five"'), "shelves.0.rows", "valid integer"),
    "unknown_key": (("retention_days = 7", "retention_days = 7\nretension = 3"),
                    "station.retension", "unknown key"),
    "unknown_key_in_shelf": (("capacity = 1", "capacity = 1\ncolour = 'red'"),
                             "shelves.2.colour", "unknown key"),
    "duplicate_shelf_number": (("number = 2", "number = 1"), "number", "duplicate number 1 in shelves"),
    "duplicate_device": (('device = "shelf-2"', 'device = "shelf-1"'), "device",
                         "duplicate device 'shelf-1'"),
    "door_device_clash": (('entry = "door-entry"', 'entry = "shelf-1"'), "device",
                          "duplicate device 'shelf-1'"),
    "shelf_with_0_rows": (("rows = 2", "rows = 0"), "shelves.2.rows", "greater than or equal to 1"),
    "row_sizes_mismatch": (('row_sizes = ["M", "L"]', 'row_sizes = ["M"]'), "shelves.2",
                           "row_sizes has 1 entries but the shelf has 2 rows"),
    "bad_size_class": (('row_sizes = ["M", "L"]', 'row_sizes = ["M", "XXL"]'), "shelves.2.row_sizes.1",
                       "'S', 'M', 'L' or 'XL'"),
    "bad_regex": ((r"pattern = '^ZT\d{12}$'", r"pattern = '^ZT(\d{12}$'"), "carriers.1.pattern",
                  "not a regular expression"),
    "capacity_over_4": (("capacity = 1", "capacity = 5"), "shelves.2.capacity", "less than or equal to 4"),
    "bad_station_id": (('id = "st-demo"', 'id = "St Demo!"'), "station.id", "pattern"),
    "bad_mode": (('placement_mode = "guided"', 'placement_mode = "psychic"'), "station.placement_mode",
                 "'guided' or 'free'"),
    "webhook_url_not_http": (('senders = [{ kind = "console" }]',
                              'senders = [{ kind = "webhook", url = "ftp://gw.example/sms" }]'),
                             "notify.senders.0", "http:// or https:// with a host"),
    "webhook_url_bad_port": (('senders = [{ kind = "console" }]',
                              'senders = [{ kind = "webhook", url = "https://gw.example:99999/sms" }]'),
                             "notify.senders.0", "port"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_the_file_the_key_and_the_fault(tmp_path: Path, case: str) -> None:
    (old, new), key, fault = BAD[case]
    path = write(tmp_path, sub(old, new))
    msg = refused(path)
    assert str(path) in msg
    assert key in msg, msg
    assert fault in msg, msg


@pytest.mark.parametrize("old,new", [("placement_timeout_s = 60", "placement_timeout_s = true"),
                                     ("rows = 5", "rows = 5.0")])
def test_a_boolean_or_float_where_a_number_or_integer_belongs_is_refused(
        tmp_path: Path, old: str, new: str) -> None:
    refused(write(tmp_path, sub(old, new)))


def test_no_shelves_at_all_is_refused(tmp_path: Path) -> None:
    text = re.sub(r"\[\[shelves\]\]\n(?:(?!\[).*\n)*", "", EXAMPLE)
    assert "[[shelves]]" not in text and "[doors]" in text
    msg = refused(write(tmp_path, text))
    assert "shelves" in msg and "Field required" in msg


def test_not_toml_is_refused_with_the_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE + "\nthis is = = not toml\n")
    msg = refused(path)
    assert str(path) in msg and "not valid TOML" in msg and "line" in msg


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_bytes(b"\xff\xfe[station]\n")
    assert "not UTF-8" in refused(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    msg = refused(path)
    assert str(path) in msg and "no such configuration file" in msg


# --- secrets ---------------------------------------------------------------------------------


def secrets_text(tmp_path: Path) -> str:
    return write_new_secrets(tmp_path / "gen.toml").read_text()


def test_generated_secrets_load_and_are_32_bytes_each(tmp_path: Path) -> None:
    s = load_secrets(write_new_secrets(tmp_path / "s.toml"), env={})
    assert all(len(k) == 32 for k in (s.device_master_key, s.hash_key, s.encryption_key, s.token_key))
    assert (tmp_path / "s.toml").stat().st_mode & 0o077 == 0, "the secrets file is private"
    assert s.device_key("st", "a") != s.device_key("st", "b")


def test_a_missing_secret_names_the_file_the_key_and_the_variable(tmp_path: Path) -> None:
    text = "\n".join(l for l in secrets_text(tmp_path).splitlines() if not l.startswith("hash_key"))
    path = write(tmp_path, text, "secrets.toml")
    with pytest.raises(ConfigError) as exc:
        load_secrets(path, env={})
    msg = str(exc.value)
    assert str(path) in msg and "hash_key" in msg and "missing secret" in msg and "PS_SECRET_HASH_KEY" in msg


def test_a_secret_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    text = re.sub(r'token_key = "[0-9a-f]+"', 'token_key = "' + "ab" * 16 + '"', secrets_text(tmp_path))
    path = write(tmp_path, text, "secrets.toml")
    with pytest.raises(ConfigError) as exc:
        load_secrets(path, env={})
    msg = str(exc.value)
    assert str(path) in msg and "token_key" in msg and "must be 32 bytes" in msg


def test_a_secret_that_is_not_text_is_refused(tmp_path: Path) -> None:
    text = re.sub(r'token_key = "[0-9a-f]+"', "token_key = 42", secrets_text(tmp_path))
    with pytest.raises(ConfigError, match="token_key: must be a string"):
        load_secrets(write(tmp_path, text, "secrets.toml"), env={})


def test_an_unknown_secret_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, secrets_text(tmp_path) + 'hash_kye = "00"\n', "secrets.toml")
    with pytest.raises(ConfigError) as exc:
        load_secrets(path, env={})
    msg = str(exc.value)
    assert str(path) in msg and "hash_kye" in msg and "unknown key" in msg


def test_secrets_from_the_environment_in_hex_or_base64(tmp_path: Path) -> None:
    env = {f"PS_SECRET_{n.upper()}": "11" * 32 for n in
           ("device_master_key", "hash_key", "encryption_key")}
    env["PS_SECRET_TOKEN_KEY"] = base64.b64encode(b"\x22" * 32).decode()
    s = load_secrets(None, env=env)
    assert s.hash_key == b"\x11" * 32 and s.token_key == b"\x22" * 32


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_new_secrets(tmp_path / "s.toml")
    s = load_secrets(path, env={"PS_SECRET_HASH_KEY": "33" * 32})
    assert s.hash_key == b"\x33" * 32


def test_missing_secrets_in_the_environment_name_the_origin() -> None:
    with pytest.raises(ConfigError, match=r"^environment: device_master_key: missing secret"):
        load_secrets(None, env={})


def test_missing_secrets_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such secrets file"):
        load_secrets(tmp_path / "none.toml", env={})


def test_secrets_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_secrets(write(tmp_path, "= =", "secrets.toml"), env={})


def test_dumped_config_loads_back_equal(tmp_path: Path) -> None:
    """`station run` gets its config as a file from tools that build it in Python."""
    cfg = load_config(EXAMPLE_CONFIG)
    cfg = cfg.model_copy(update={
        "station": cfg.station.model_copy(update={"name": 'Quote " back\\slash\ttab 包裹 \x01',
                                                  "pickup_session_timeout_s": 60.0}),
        "mqtt": cfg.mqtt.model_copy(update={"username": "edge", "port": 18830}),
        "notify": cfg.notify.model_copy(update={
            "senders": [SenderConfig(kind="webhook", url="http://127.0.0.1:9/sms"),
                        SenderConfig(kind="console")], "retry_initial_s": 0.2}),
    })
    path = write(tmp_path, dump_config_toml(cfg))
    assert load_config(path) == cfg
    assert load_config(write(tmp_path, dump_config_toml(load_config(EXAMPLE_CONFIG)), "plain.toml")) \
        == load_config(EXAMPLE_CONFIG)


def test_bundles_without_a_fleet_broker_are_refused(tmp_path: Path) -> None:
    """The bundle listener reads the fleet broker of [upstream]: enabled without its host, it
    would connect to nothing and say nothing; the config says so instead."""
    text = EXAMPLE + '\n[bundles]\nenabled = true\ntrusted_key = "' + "ab" * 32 + '"\n'
    msg = refused(write(tmp_path, text))
    assert "upstream.host" in msg, msg
    with_host = text + '\n[upstream]\nhost = "fleet.example"\nusername = "st"\n'
    assert load_config(write(tmp_path, with_host, "ok.toml")).bundles.enabled


def test_the_kiosk_section_sets_how_each_visit_starts(tmp_path: Path) -> None:
    """[kiosk] (#19.5, docs/customer-care.md "Kiosk"): defaults when absent, read when set,
    a reset time too short for a person to read the screen refused by name."""
    assert load_config(EXAMPLE_CONFIG).kiosk.model_dump() == {
        "large_text": False, "sound": True, "speech": True, "idle_reset_s": 60.0, "result_reset_s": 90.0}
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    cfg = load_config(write(tmp_path, text + "\n[kiosk]\nlarge_text = true\nspeech = false\n"))
    assert cfg.kiosk.large_text and not cfg.kiosk.speech and cfg.kiosk.sound
    msg = refused(write(tmp_path, text + "\n[kiosk]\nidle_reset_s = 1.0\n"))
    assert "kiosk.idle_reset_s" in msg
    msg = refused(write(tmp_path, text + "\n[kiosk]\nlarge_txt = true\n"))
    assert "kiosk.large_txt: unknown key" in msg


ROOM_CAMERA = '''
[[cameras]]
id = "cam-room-1"
role = "room"
source = "sim:room-1"
sees = ["shelf-1", "door-entry"]
'''


def test_a_room_camera_map_names_shelves_and_doors(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE + ROOM_CAMERA))
    assert [c.sees for c in cfg.room_camera_list] == [["shelf-1", "door-entry"]]


def test_a_room_camera_that_sees_an_unknown_shelf_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE + ROOM_CAMERA.replace('"shelf-1"', '"shelf-9"'))
    msg = refused(path)
    assert str(path) in msg and "cameras[3] (cam-room-1).sees: 'shelf-9' is not a shelf device or door" in msg
    assert "known: shelf-1, shelf-2, shelf-out, door-entry, door-exit" in msg, msg


def test_only_a_room_camera_has_a_map(tmp_path: Path) -> None:
    text = EXAMPLE.replace('role = "face"\nsource = "sim:face"', 'role = "face"\nsource = "sim:face"\nsees = ["shelf-1"]')
    msg = refused(write(tmp_path, text))
    assert "cameras.0" in msg and "only a room camera has `sees` (this one is face)" in msg, msg


def test_a_device_listed_twice_in_a_room_map_is_refused(tmp_path: Path) -> None:
    msg = refused(write(tmp_path, EXAMPLE + ROOM_CAMERA.replace('"door-entry"', '"shelf-1"')))
    assert "a device listed twice in `sees`" in msg, msg
