from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from shelf_sim.blinks import live_sequence, still_sequence
from station.vision.faces import (
    EnrolmentRefused,
    FaceEngine,
    FaceMatcher,
    FaceSettings,
    FaceVerifier,
)

SUBJECTS = ("obama-1", "biden-1", "hanks-1", "kudrow-1")


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def brightness(img: np.ndarray, delta: float, contrast: float = 1.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * contrast + delta, 0, 255).astype(np.uint8)


def rescale(img: np.ndarray, factor: float) -> np.ndarray:
    return cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA
                      if factor < 1 else cv2.INTER_CUBIC)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    _ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


TRANSFORMS = {
    "rotate+12": lambda im: rotate(im, 12),
    "rotate-12": lambda im: rotate(im, -12),
    "brighter": lambda im: brightness(im, 45),
    "darker": lambda im: brightness(im, -50, 0.8),
    "scale0.7": lambda im: rescale(im, 0.7),
    "scale1.6": lambda im: rescale(im, 1.6),
    "jpeg25": lambda im: jpeg(im, 25),
}


@pytest.fixture(scope="session")
def matcher(portraits) -> FaceMatcher:
    """Everyone enrolled from one portrait each (obama from obama-1 only)."""
    chosen = [p for name, p in portraits.items() if name.endswith("-1")]
    return FaceMatcher(np.stack([p.face.encoding for p in chosen]), [p.person for p in chosen])


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("change", sorted(TRANSFORMS))
def test_same_face_matches_through_image_changes(engine, portraits, matcher, subject,
                                                 change) -> None:
    p = portraits[subject]
    faces = engine.analyse(TRANSFORMS[change](p.image))
    assert len(faces) == 1
    match = matcher.match(faces[0].encoding)[0]
    assert match.label == p.person, match
    assert match.distance < 0.35


def test_other_photos_of_the_same_person_match(portraits, matcher) -> None:
    for name in ("obama-2", "obama-3"):
        match = matcher.match(portraits[name].face.encoding)[0]
        assert match.label == "obama" and match.distance < 0.5, (name, match)


def test_different_people_stay_apart(portraits) -> None:
    singles = [p for name, p in portraits.items() if name.endswith("-1")]
    for a, b in itertools.combinations(singles, 2):
        distance = float(np.linalg.norm(a.face.encoding - b.face.encoding))
        assert distance > 0.55, (a.person, b.person, distance)


def test_stranger_is_not_matched(portraits) -> None:
    known = [p for p in portraits.values() if p.person in ("biden", "hanks", "kudrow")]
    m = FaceMatcher(np.stack([p.face.encoding for p in known]), [p.person for p in known])
    for stranger in ("obama-1", "aniston-1", "perry-1", "collins-1"):
        result = m.match(portraits[stranger].face.encoding)[0]
        assert result.label is None and result.reason == "unknown", (stranger, result)


def test_matcher_uses_closest_template_per_label_and_the_margin() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, 128)
    step = rng.normal(0, 1, 128)
    b = a + 0.05 * step / np.linalg.norm(step)  # bob 0.05 from ann: too close to call
    m = FaceMatcher(np.stack([a, a + 0.5, b]), ["ann", "ann", "bob"], threshold=0.5,
                    margin=0.1)
    result = m.match(a)[0]
    assert result.distance == pytest.approx(0.0, abs=1e-3)
    assert result.label is None and result.reason == "ambiguous"
    assert len(m) == 3
    assert m.distances(np.stack([a, b])).shape == (2, 2)
    far = FaceMatcher(np.stack([a, a + 0.5]), ["ann", "bob"], threshold=0.5, margin=0.1)
    assert far.match(a)[0].label == "ann"


def test_matcher_agrees_with_face_recognition_face_distance(portraits, matcher) -> None:
    import face_recognition
    singles = [p for name, p in portraits.items() if name.endswith("-1")]
    templates = np.stack([p.face.encoding for p in singles])
    query = portraits["obama-2"].face.encoding
    theirs = face_recognition.face_distance(templates, query)
    ours = FaceMatcher(templates, [p.name for p in singles]).distances(query)[0]
    order = np.argsort([p.name for p in singles])
    np.testing.assert_allclose(ours, theirs[order], atol=1e-4)


def test_empty_matcher_matches_nobody() -> None:
    m = FaceMatcher(np.zeros((0, 128)), [])
    assert m.match(np.zeros(128))[0].reason == "no_templates"


# --- enrolment -----------------------------------------------------------------------------

def test_enrolment_accepts_good_photos_of_one_person(engine, portraits) -> None:
    enrolment = engine.enrol([portraits[n].image for n in ("obama-1", "obama-2", "obama-3")])
    assert enrolment.templates.shape == (3, 128)
    assert enrolment.templates.dtype == np.float32


def test_enrolment_accepts_encoded_bytes(engine, portraits) -> None:
    _ok, buf = cv2.imencode(".jpg", portraits["hanks-1"].image)
    assert engine.enrol([buf.tobytes()]).templates.shape == (1, 128)


def test_enrolment_refuses_no_face(engine) -> None:
    blank = np.full((320, 320, 3), 128, np.uint8)
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([blank])
    assert (err.value.image_index, err.value.check) == (0, "face_count")
    assert "no face" in err.value.detail


def test_enrolment_refuses_two_faces(engine, portraits) -> None:
    two = np.hstack([portraits["biden-1"].image, portraits["hanks-1"].image])
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([portraits["biden-1"].image, two])
    assert (err.value.image_index, err.value.check) == (1, "face_count")
    assert "2 faces" in err.value.detail


def test_enrolment_refuses_a_group_photo(engine, scene) -> None:
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([scene("group-six.jpg")])
    assert err.value.check == "face_count" and "6 faces" in err.value.detail


def test_enrolment_refuses_a_face_too_small(engine, scene) -> None:
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([scene("messi5.jpg")])  # a 36 px face
    assert err.value.check == "face_size"


def test_enrolment_refuses_a_shrunken_portrait(engine, portraits) -> None:
    small = rescale(portraits["obama-1"].image, 0.45)  # face ~58 px
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([small])
    assert err.value.check == "face_size"


def test_enrolment_refuses_a_blurred_photo(engine, portraits) -> None:
    blurred = cv2.GaussianBlur(portraits["obama-1"].image, (0, 0), 2.5)
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([blurred])
    assert err.value.check == "sharpness"


def test_enrolment_refuses_an_overexposed_photo(engine, portraits) -> None:
    bright = brightness(portraits["biden-1"].image, 110)
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([bright])
    assert err.value.check == "exposure"


def test_enrolment_refuses_photos_of_two_people(engine, portraits) -> None:
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([portraits["obama-1"].image, portraits["obama-2"].image,
                      portraits["biden-1"].image])
    assert err.value.check == "consistency" and err.value.image_index == 2


def test_enrolment_refuses_garbage_bytes_by_index(engine, portraits) -> None:
    with pytest.raises(EnrolmentRefused) as err:
        engine.enrol([portraits["obama-1"].image, b"not an image"])
    assert (err.value.image_index, err.value.check) == (1, "image")


def test_enrolment_needs_one_to_five_images(engine) -> None:
    with pytest.raises(EnrolmentRefused):
        engine.enrol([])


# --- decisions over several frames ---------------------------------------------------------

@pytest.fixture(scope="session")
def verifier(engine, matcher) -> FaceVerifier:
    return FaceVerifier(engine, matcher, min_agreeing=3)


def test_live_courier_is_admitted(verifier, portraits) -> None:
    # not hanks-1: the passive spoof model calls that portrait a spoof (docs/faces.md)
    p = portraits["leblanc-1"]
    decision = verifier.decide(live_sequence(p.image, p.face.landmarks))
    assert decision.label == "leblanc" and decision.reason == "matched", decision
    assert decision.live and decision.frames_agreeing >= 3
    log = decision.to_log()
    assert set(log) >= {"label", "distance", "second_distance", "live", "reason", "passive"}
    assert log["passive"] == "real" and log["liveness"] == "blink"
    assert not any(isinstance(v, np.ndarray) for v in log.values())
    assert all(isinstance(s, float) for s in log["passive_scores"])  # scores, not pixels


def test_photo_of_a_courier_is_refused_as_not_live(verifier, portraits) -> None:
    decision = verifier.decide(still_sequence(portraits["hanks-1"].image))
    assert decision.label is None and decision.reason == "not_live"
    assert decision.distance < 0.1  # it *is* the right face: liveness alone refused it


def test_stranger_is_refused_over_several_frames(engine, portraits) -> None:
    known = [p for p in portraits.values() if p.person in ("biden", "kudrow")]
    v = FaceVerifier(engine, FaceMatcher(np.stack([p.face.encoding for p in known]),
                                         [p.person for p in known]))
    p = portraits["hanks-1"]
    decision = v.decide(live_sequence(p.image, p.face.landmarks))
    assert decision.label is None and decision.reason == "unknown"


def test_too_few_agreeing_frames_is_no_decision(engine, matcher, portraits) -> None:
    v = FaceVerifier(engine, matcher, min_agreeing=3, require_live=False)
    blank = np.full_like(portraits["biden-1"].image, 120)
    decision = v.decide([portraits["biden-1"].image, blank, blank, portraits["biden-1"].image])
    assert decision.reason == "not_enough_frames" and decision.frames_agreeing == 2


def test_no_face_in_any_frame(verifier) -> None:
    blank = np.full((240, 320, 3), 90, np.uint8)
    assert verifier.decide([blank] * 3).reason == "no_face"


def test_engine_settings_are_per_instance() -> None:
    strict = FaceEngine(FaceSettings(min_face_px=200))
    assert strict.settings.min_face_px == 200
    assert FaceSettings().min_face_px == 80
