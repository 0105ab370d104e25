"""The `station` command as an operator uses it: the courier registry, tokens, the log, and
clear one-line errors for bad arguments."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from station.api.auth import read_token
from station.config import load_secrets, write_new_secrets

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "examples" / "station.toml").read_text()


def run(*args: str, env_secrets: Path | None = None, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PS_COURIER_PIN": "4826"}
    if env_secrets is not None:
        env["PS_SECRETS_FILE"] = str(env_secrets)
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, input=input_, timeout=60, check=False)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "station.toml"
    config.write_text(EXAMPLE.replace('database = "var/station.db"', f'database = "{tmp_path / "st.db"}"'))
    return config, write_new_secrets(tmp_path / "secrets.toml")


def test_help_lists_every_subcommand() -> None:
    out = run("--help").stdout
    for name in ("run", "init-secrets", "token", "log", "courier"):
        assert re.search(rf"^\s+{name}\b", out, re.M), out
    assert not re.search(r"^\s+demo\b", out, re.M), "the demo is the simulator's (shelf-sim demo)"


def test_courier_registry_from_the_command_line(setup: tuple[Path, Path]) -> None:
    config, secrets = setup
    added = run("courier", "add", "c-001", "--carrier", "SF", "--name", "Li Lei", "--config", str(config),
                env_secrets=secrets)
    assert added.returncode == 0, added.stderr
    listed = run("courier", "list", "--config", str(config), env_secrets=secrets)
    assert "c-001" in listed.stdout and "Li Lei" in listed.stdout
    assert run("courier", "disable", "c-001", "--config", str(config), env_secrets=secrets).returncode == 0
    assert "no" in run("courier", "list", "--config", str(config), env_secrets=secrets).stdout
    again = run("courier", "add", "c-001", "--carrier", "SF", "--name", "X", "--config", str(config),
                env_secrets=secrets)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    unknown = run("courier", "add", "c-002", "--carrier", "NOPE", "--name", "X", "--config", str(config),
                  env_secrets=secrets)
    assert unknown.returncode == 2 and "unknown carrier" in unknown.stderr
    assert run("courier", "remove", "c-001", "--config", str(config), env_secrets=secrets).returncode == 0
    assert "c-001" not in run("courier", "list", "--config", str(config), env_secrets=secrets).stdout
    log = run("log", "export", "--config", str(config), "--type", "courier.*")
    types = [json.loads(line)["type"] for line in log.stdout.splitlines()]
    assert types == ["courier.added", "courier.disabled", "courier.removed"]
    assert "4826" not in log.stdout  # the PIN is only ever an argon2 hash
    tail = run("log", "tail", "-n", "2", "--config", str(config))
    assert "courier.removed" in tail.stdout
    verify = run("log", "verify", "--config", str(config))
    assert verify.returncode == 0 and "3 events" in verify.stdout


def test_token_create_makes_a_token_the_station_accepts(setup: tuple[Path, Path]) -> None:
    _, secrets = setup
    res = run("token", "create", "--role", "kiosk", "--subject", "kiosk-1", "--secrets", str(secrets))
    assert res.returncode == 0, res.stderr
    principal = read_token(load_secrets(secrets, env={}).token_key, res.stdout.strip())
    assert (principal.role, principal.subject) == ("kiosk", "kiosk-1")
    bad = run("token", "create", "--role", "kiosk", "--subject", "no spaces!", "--secrets", str(secrets))
    assert bad.returncode == 2 and "subject" in bad.stderr


@pytest.mark.parametrize("args,fragment", [
    (("log", "verify", "--db", "/nonexistent/x.db"), "no such database"),
    (("courier", "list", "--config", "/nonexistent/station.toml"), "no such configuration file"),
    (("log", "replay", "--db", "/nonexistent.db", "--out", "/tmp/x.db"), "no such database"),
])
def test_bad_arguments_end_with_one_clear_line(args: tuple[str, ...], fragment: str) -> None:
    res = run(*args)
    assert res.returncode == 2, res.stderr
    assert fragment in res.stderr and "Traceback" not in res.stderr


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    res = run("frobnicate")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_reachable_flags_from_the_command_line_take_the_number_typed_in(setup: tuple[Path, Path]) -> None:
    """#19.5, ADR 0154: the number is read from stdin (never an argument), hashed at once;
    the log and the list hold only the hash and the masked form."""
    config, secrets = setup
    config.write_text(config.read_text().replace("# reachable_rows = [2, 3]", "reachable_rows = [2, 3]"))
    number = "13957246813"
    done = run("reachable", "set", "--phone-stdin", "--config", str(config), env_secrets=secrets,
               input_=number + "\n")
    assert done.returncode == 0 and "139****6813 needs a reachable slot" in done.stdout, done.stderr
    again = run("reachable", "set", "--phone-stdin", "--config", str(config), env_secrets=secrets,
                input_="+86 139 5724 6813\n")
    assert "(unchanged)" in again.stdout
    bad = run("reachable", "set", "--phone-stdin", "--config", str(config), env_secrets=secrets,
              input_="12345\n")
    assert bad.returncode == 2 and "not a mobile number" in bad.stderr and "Traceback" not in bad.stderr
    listed = run("reachable", "list", "--config", str(config), env_secrets=secrets)
    assert "rows: 2-3" in listed.stdout and "139****6813" in listed.stdout and number not in listed.stdout
    cleared = run("reachable", "clear", "--phone-stdin", "--config", str(config), env_secrets=secrets,
                  input_=number + "\n")
    assert cleared.returncode == 0 and "no reachable-slot flag" in cleared.stdout
    log = run("log", "export", "--config", str(config), "--type", "recipient.*")
    types = [json.loads(line)["type"] for line in log.stdout.splitlines()]
    assert types == ["recipient.reachable.set", "recipient.reachable.cleared"]
    assert number not in log.stdout and "57246813" not in log.stdout
    assert "139****6813" in log.stdout
    wrong = config.read_text().replace("reachable_rows = [2, 3]", "reachable_rows = [4, 8]")
    config.write_text(wrong)
    refused = run("reachable", "list", "--config", str(config), env_secrets=secrets)
    said = " ".join(refused.stderr.split())  # the console wraps long lines
    assert refused.returncode == 2 and "reachable_rows [4, 8]: no inbound shelf has row 8" in said
