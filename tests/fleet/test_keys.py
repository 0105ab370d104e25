"""fleet/keys.py on its own (ADR 0133): the key directory's states, the leaked-key path
(`rotate --now`), adopting an old single key file, and the publisher's view following a
rotation without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet import keys
from fleet.bundles import keygen


def test_a_key_directory_stages_rotates_retires_and_adopts(tmp_path: Path) -> None:
    old_file = tmp_path / "bundle-signing.pem"
    old_pub = keygen(old_file)
    d = tmp_path / "keys"
    first = keys.init(d, old_file)                      # the key `fleet.bundles keygen` made, adopted
    assert keys.listing(d) == [{"kid": first, "state": "active", "public_key": old_pub}]
    with pytest.raises(keys.KeyError_, match="already holds keys"):
        keys.init(d)
    view = keys.SigningKeys(d)
    assert view.current()[0] == first
    with pytest.raises(keys.KeyError_, match="no staged key"):
        keys.rotate(d)
    second = keys.stage_next(d)
    with pytest.raises(keys.KeyError_, match="staged already"):
        keys.stage_next(d)
    assert view.current()[0] == first                   # staged is not signing
    assert keys.rotate(d) == (first, second)
    assert view.current()[0] == second                  # the publisher follows without a restart
    old, third = keys.rotate(d, now=True)               # a leaked key: a new one signs at once
    assert old == second and view.current()[0] == third
    assert [(k["kid"], k["state"]) for k in keys.listing(d)] == [(third, "active"), (first, "retired"),
                                                                  (second, "retired")]
    with pytest.raises(keys.KeyError_, match="only a retired key"):
        keys.retire(d, third)
    keys.retire(d, first)
    assert not (d / f"{first}.pem").exists() and first not in {k["kid"] for k in keys.listing(d)}
    with pytest.raises(keys.KeyError_, match="no retired key"):
        keys.retire(d, first)
    (d / f"{third}.pem").write_bytes((d / f"{second}.pem").read_bytes())   # a file swapped under the kid
    with pytest.raises(keys.KeyError_, match="holds another key"):
        keys.load_key(d, third)


def test_the_keys_command_says_what_is_wrong_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys.main(["rotate", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("fleet keys: ")
