"""The encoder run by OpenCV is dlib's encoder: same descriptor for every test portrait, so the
thresholds and distances of docs/faces.md hold unchanged (ADR 0162)."""

from __future__ import annotations

import dlib
import numpy as np
import pytest

from station.vision.encoder import FaceEncoder
from station.vision.faces import FaceEngine, _models_dir
from tests.vision.conftest import Portrait
from tools.export_dlib_encoder import read_weights


@pytest.fixture(scope="module")
def dlib_encoder():
    return dlib.face_recognition_model_v1(
        str(_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))


def _shape(engine: FaceEngine, portrait: Portrait):
    rgb = np.ascontiguousarray(portrait.image[:, :, ::-1])
    rect = engine._detect_from(rgb, None)[0]
    return rgb, engine._aligner(rgb, rect)


def test_every_portrait_encodes_as_dlib_encodes_it(engine: FaceEngine, portraits: dict[str, Portrait],
                                                   dlib_encoder) -> None:
    assert len(portraits) >= 10
    for name, portrait in portraits.items():
        rgb, shape = _shape(engine, portrait)
        ours = engine._encoder.encode(rgb, shape)
        theirs = np.array(dlib_encoder.compute_face_descriptor(rgb, shape, 1))
        assert ours.shape == (128,) and ours.dtype == np.float64
        assert np.abs(ours - theirs).max() < 1e-5, name
        # and the engine's own analysis uses it
        assert np.linalg.norm(portrait.face.encoding - theirs) < 1e-5, name


def test_jittered_encodings_stay_as_close_to_the_plain_one_as_dlibs(
        engine: FaceEngine, portraits: dict[str, Portrait], dlib_encoder) -> None:
    """Jitters are random (dlib's own generator), so the figure is a bound, not a value."""
    rgb, shape = _shape(engine, portraits["obama-1"])
    plain = engine._encoder.encode(rgb, shape)
    ours = [np.linalg.norm(plain - engine._encoder.encode(rgb, shape, num_jitters=4))
            for _ in range(3)]
    theirs = [np.linalg.norm(plain - np.array(dlib_encoder.compute_face_descriptor(rgb, shape, 4)))
              for _ in range(3)]
    assert all(0 < d < 0.25 for d in ours + theirs), (ours, theirs)  # same person: < 0.5


def test_a_missing_model_file_is_named(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="face encoder model missing"):
        FaceEncoder(tmp_path / "none.onnx")


def test_the_exporter_reads_every_layer_of_dlibs_file() -> None:
    """The weights the ONNX file was made from: 29 convolutions with their affine layers, the
    file's channel means, a 256 -> 128 projection (the exporter's own checks run too)."""
    data = (_models_dir() / "dlib_face_recognition_resnet_model_v1.dat").read_bytes()
    w = read_weights(data)
    assert [c[0].shape[0] for c in w.convs][:3] == [32, 32, 32]
    assert w.convs[0][0].shape == (32, 3, 7, 7) and w.convs[0][2] == 2
    assert w.fc is not None and w.fc.shape == (256, 128)
    assert np.allclose(w.mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    with pytest.raises(ValueError):
        read_weights(data[: len(data) // 2])
