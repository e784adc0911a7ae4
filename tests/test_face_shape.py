"""Expression shape from the face mesh: what it measures on a real face, and what it ignores."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from multimodal_ser.face.detection import MediaPipeGraphs, add_landmarks, detect_faces
from multimodal_ser.face.shape import SHAPE_FEATURES, expression_shape


def _mesh(rgb: np.ndarray) -> np.ndarray:
    with MediaPipeGraphs(0.5) as graphs:
        faces = detect_faces(rgb, graphs, min_face_px=20, max_faces=1)
        assert faces, "no face found"
        add_landmarks(rgb, faces[0], graphs.mesh)
    assert faces[0].landmarks is not None, "no mesh found"
    return faces[0].landmarks


@pytest.fixture(scope="module")
def smiling(sample_media) -> tuple[np.ndarray, np.ndarray]:
    """The sample photo (a smiling face) as RGB, and its mesh landmarks ``(478, 3)`` in pixels."""
    path = sample_media / "face.jpg"
    if not path.is_file():
        pytest.skip(f"{path} (the project's sample face photo) is missing")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb, _mesh(rgb)


def _value(shape: np.ndarray, name: str) -> float:
    return float(shape[SHAPE_FEATURES.index(name)])


@pytest.mark.models
def test_a_smile_lifts_the_mouth_corners_above_the_lips(smiling):
    shape = expression_shape(smiling[1])
    assert shape.shape == (len(SHAPE_FEATURES),) and np.isfinite(shape).all()
    assert _value(shape, "mouth_corner_lift") > 0.05
    # the face's proportions, in eye distances: a mouth about as wide as the eyes are apart, brows above the eyes
    assert 0.7 < _value(shape, "mouth_width") < 1.4
    assert 0.8 < _value(shape, "jaw_drop") < 1.6
    assert _value(shape, "brow_raise") > 0 and _value(shape, "inner_brow_raise") > 0


@pytest.mark.models
def test_the_shape_ignores_where_the_face_is_how_large_and_how_tilted(smiling):
    landmarks = smiling[1]
    angle = np.radians(25)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = landmarks.copy()
    moved[:, :2] = 2.5 * landmarks[:, :2] @ turn.T + [300.0, -40.0]
    np.testing.assert_allclose(expression_shape(moved), expression_shape(landmarks), atol=1e-9)


@pytest.mark.models
def test_the_mesh_of_a_tilted_photo_gives_nearly_the_same_shape(smiling):
    rgb, landmarks = smiling
    h, w = rgb.shape[:2]
    big = cv2.copyMakeBorder(rgb, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REPLICATE)
    tilted = cv2.warpAffine(big, cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), 15, 1.0),
                            (big.shape[1], big.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(expression_shape(_mesh(tilted)), expression_shape(landmarks), atol=0.05)


def test_landmarks_that_are_not_a_mesh_are_refused():
    with pytest.raises(ValueError, match="face-mesh landmarks"):
        expression_shape(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="eye centres coincide"):
        expression_shape(np.zeros((478, 3)))
