from __future__ import annotations

import numpy as np
import pytest

from station.config import CarrierConfig
from station.vision.codes import CodeReader, WaybillMatcher, decode_codes
from tests.vision.codegen import code128_image, compose, degrade, qr_image, rotate, waybill_numbers


@pytest.fixture(scope="module")
def reader() -> CodeReader:
    return CodeReader()


@pytest.mark.parametrize("angle", [0, 10, 20, 30])
@pytest.mark.parametrize("count", [1, 5, 10])
def test_code128_waybills_read_at_angles_and_counts(reader, angle, count) -> None:
    texts = waybill_numbers(count, seed=count + angle)
    labels = [rotate(code128_image(t), angle if i % 2 else -angle) for i, t in enumerate(texts)]
    size = (2592, 1944) if count == 10 else (1920, 1080)
    frame = compose(labels, size=size, seed=angle)
    found = {c.text for c in reader.decode(frame) if c.symbology == "code128"}
    assert found == set(texts)


@pytest.mark.parametrize("angle", [0, 30])
def test_code128_read_through_blur_and_noise(reader, angle) -> None:
    texts = waybill_numbers(5, seed=7)
    labels = [rotate(code128_image(t), angle) for t in texts]
    frame = degrade(compose(labels, seed=1), blur_sigma=1.0, noise_sigma=8, seed=angle)
    found = {c.text for c in reader.decode(frame)}
    assert found >= set(texts)


def test_zxing_alone_loses_30_degree_codes_that_straightening_recovers() -> None:
    texts = waybill_numbers(3, seed=3)
    frame = compose([rotate(code128_image(t), 30) for t in texts], seed=2)
    plain = CodeReader(straighten=False, aruco_qr=False).decode(frame)
    assert not {c.text for c in plain} & set(texts)
    assert {c.text for c in CodeReader().decode(frame)} == set(texts)


@pytest.mark.parametrize("angle", [0, 15, 30])
def test_qr_codes_read_rotated_blurred_and_noisy(reader, angle) -> None:
    texts = [f"PS1:{i:02d}-{i * 7919:06d}:ABCD{i}" for i in range(5)]
    labels = [rotate(qr_image(t), angle if i % 2 else -angle) for i, t in enumerate(texts)]
    frame = degrade(compose(labels, size=(1280, 720), seed=angle), 1.0, 8, seed=angle)
    codes = reader.decode(frame)
    assert {c.text for c in codes if c.symbology == "qr"} == set(texts)
    for code in codes:
        assert len(code.corners) == 4


def test_mixed_frame_and_corners_are_in_frame_pixels(reader) -> None:
    wb = waybill_numbers(1, seed=9)[0]
    frame = compose([rotate(code128_image(wb), 25), qr_image("PS1:123456")], size=(1280, 720))
    codes = {c.text: c for c in reader.decode(frame)}
    assert set(codes) == {wb, "PS1:123456"}
    assert codes[wb].symbology == "code128" and codes["PS1:123456"].symbology == "qr"
    for code in codes.values():
        xs, ys = zip(*code.corners)
        assert min(xs) >= 0 and max(xs) <= 1280 and min(ys) >= 0 and max(ys) <= 720


def test_each_code_is_reported_once(reader) -> None:
    wb = waybill_numbers(1)[0]
    frame = compose([code128_image(wb)], size=(800, 600))
    assert [c.text for c in decode_codes(frame, reader)] == [wb]


def test_blank_frame_reads_nothing(reader) -> None:
    assert reader.decode(np.full((720, 1280, 3), 200, np.uint8)) == []


def test_waybills_validated_against_carrier_patterns(config) -> None:
    matcher = WaybillMatcher(config.carriers)
    assert matcher.match("SF1234567890123").carrier == "SF"
    assert matcher.match("ZT123456789012").carrier == "ZTO"
    assert matcher.match("JD0123456789ABCD").carrier == "JD"
    assert matcher.match("SF123") is None
    assert matcher.match("6901234567892") is None  # an EAN-13 product code


def test_text_matching_two_carriers_is_refused() -> None:
    carriers = [CarrierConfig(name="A", pattern=r"^X\d{4}$"),
                CarrierConfig(name="B", pattern=r"^X\d+$")]
    assert WaybillMatcher(carriers).match("X1234") is None
    assert WaybillMatcher(carriers).match("X12345").carrier == "B"


def test_waybills_from_a_frame(reader, config) -> None:
    texts = waybill_numbers(4, seed=5)
    frame = compose([code128_image(t) for t in texts] + [qr_image("SF1111111111111")])
    waybills = WaybillMatcher(config.carriers).waybills(reader.decode(frame))
    assert sorted(w.waybill for w in waybills) == sorted(texts)  # the QR is not a waybill
    assert {w.carrier for w in waybills} == {"SF", "ZTO", "YTO", "JD"}
