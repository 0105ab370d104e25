from __future__ import annotations

import numpy as np
import pytest

from station.vision.templates import TemplateCipher, TemplateError


def template(seed: int = 0, rows: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, (rows, 128)).astype(np.float32)


def test_round_trip(secrets) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    t = template(rows=3)
    blob = cipher.encrypt(t, "courier-7")
    np.testing.assert_array_equal(cipher.decrypt(blob, "courier-7"), t)
    assert t.tobytes() not in blob


def test_single_vector_round_trips_as_one_row(secrets) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    assert cipher.decrypt(cipher.encrypt(template()[0], "c1"), "c1").shape == (1, 128)


def test_template_moved_to_another_courier_does_not_decrypt(secrets) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    blob = cipher.encrypt(template(), "alice")
    with pytest.raises(TemplateError):
        cipher.decrypt(blob, "bob")


@pytest.mark.parametrize("position", [0, 1, 3, 20, -1])
def test_any_flipped_byte_is_detected(secrets, position: int) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    blob = bytearray(cipher.encrypt(template(), "alice"))
    blob[position] ^= 0x01
    with pytest.raises(TemplateError):
        cipher.decrypt(bytes(blob), "alice")


def test_other_key_does_not_decrypt(secrets) -> None:
    blob = TemplateCipher(secrets.encryption_key).encrypt(template(), "alice")
    with pytest.raises(TemplateError):
        TemplateCipher(bytes(32)).decrypt(blob, "alice")


def test_same_template_encrypts_differently_each_time(secrets) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    assert cipher.encrypt(template(), "a") != cipher.encrypt(template(), "a")


def test_truncated_blob_and_bad_input_are_refused(secrets) -> None:
    cipher = TemplateCipher(secrets.encryption_key)
    with pytest.raises(TemplateError):
        cipher.decrypt(b"\x01\x00", "a")
    with pytest.raises(ValueError):
        cipher.encrypt(np.full(128, np.nan), "a")
    with pytest.raises(ValueError):
        TemplateCipher(b"short")
