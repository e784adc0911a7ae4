"""Expression shape of one face from its mesh: where the mouth corners, lips, brows and eyelids are.

Facial expressions move a few parts of the face (Ekman's action units): the mouth corners rise in
a smile and fall in sadness, the inner brows rise in fear and sadness and draw together in anger,
the upper lip rises in disgust, the jaw drops in surprise. :func:`expression_shape` measures those
parts on the 2-D mesh after rotating the eye line level, in units of the distance between the eye
centres, so that neither the face's size in the frame nor its roll changes a value.
"""

from __future__ import annotations

import numpy as np

from .geometry import CHIN, INNER_LIPS, LEFT_EYE, RIGHT_EYE, eye_aspect_ratio

# MediaPipe face-mesh landmark indices ("right"/"left": the person's own sides).
_MOUTH_CORNERS = (61, 291)
_OUTER_LIPS = (0, 17)  # upper and lower outer lip on the midline
_NOSE_TIP = 1
_BROWS_MIDDLE = (105, 334)
_BROWS_INNER = (107, 336)

SHAPE_FEATURES: tuple[str, ...] = (
    "mouth_width",
    "mouth_corner_lift",
    "lips_parted",
    "lips_height",
    "upper_lip_to_nose",
    "jaw_drop",
    "brow_raise",
    "inner_brow_raise",
    "brow_gap",
    "eye_aperture",
)
"""Names of :func:`expression_shape`'s values, in order. Lengths are in eye distances; vertical
ones are measured in the eye-levelled frame, positive upwards where the name says "raise" or "lift".

- ``mouth_width``: corner to corner;
- ``mouth_corner_lift``: how far the corners sit above the middle of the inner lips (a smile > 0);
- ``lips_parted``, ``lips_height``: inner-lip gap and outer-lip height on the midline;
- ``upper_lip_to_nose``: from the nose tip down to the upper lip (shrinks as the upper lip rises);
- ``jaw_drop``: nose tip to chin;
- ``brow_raise``, ``inner_brow_raise``: middle and inner brow above the eye line (mean of both sides);
- ``brow_gap``: between the inner ends of the brows (shrinks in a frown);
- ``eye_aperture``: lid to lid over corner to corner, mean of both eyes (no unit).
"""


def expression_shape(landmarks: np.ndarray) -> np.ndarray:
    """The :data:`SHAPE_FEATURES` of one face, shape ``(10,)`` float64.

    Args:
        landmarks: ``(468 or 478, 2 or 3)`` mesh landmarks in pixels (only x and y are read).

    Raises:
        ValueError: too few landmarks, or both eye centres at one point.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or len(points) < 468 or points.shape[1] < 2:
        raise ValueError(f"expected (468+, 2+) face-mesh landmarks, not shape {points.shape}")
    xy = points[:, :2]
    right_eye = (xy[RIGHT_EYE["outer"]] + xy[RIGHT_EYE["inner"]]) / 2
    left_eye = (xy[LEFT_EYE["outer"]] + xy[LEFT_EYE["inner"]]) / 2
    across = left_eye - right_eye
    distance = float(np.hypot(*across))
    if distance <= 0:
        raise ValueError("the eye centres coincide: no scale to measure the face in")
    cos, sin = across / distance
    # rotate about the eye midpoint so the eye line is the x axis; y grows downwards, as in the image
    level = (xy - (right_eye + left_eye) / 2) @ np.array([[cos, -sin], [sin, cos]]) / distance

    def height(i: int) -> float:
        """Height above the eye line (positive upwards)."""
        return -float(level[i, 1])

    def gap(i: int, j: int) -> float:
        return float(np.hypot(*(level[i] - level[j])))

    inner_lips_middle = (height(INNER_LIPS[0]) + height(INNER_LIPS[1])) / 2
    return np.array([
        gap(*_MOUTH_CORNERS),
        np.mean([height(i) for i in _MOUTH_CORNERS]) - inner_lips_middle,
        gap(*INNER_LIPS),
        gap(*_OUTER_LIPS),
        height(_NOSE_TIP) - height(_OUTER_LIPS[0]),
        height(_NOSE_TIP) - height(CHIN),
        float(np.mean([height(i) for i in _BROWS_MIDDLE])),
        float(np.mean([height(i) for i in _BROWS_INNER])),
        gap(*_BROWS_INNER),
        (eye_aspect_ratio(level, RIGHT_EYE) + eye_aspect_ratio(level, LEFT_EYE)) / 2,
    ])
