"""Engagement geometry of one face from its 478 mesh landmarks: head pose, eyes, gaze, mouth.

Head pose by ``cv2.solvePnP`` of six mesh landmarks (:data:`POSE_LANDMARKS`) against MediaPipe's
canonical 3-D face (:data:`POSE_MODEL_POINTS`); eye aspect ratio; a gaze-toward-camera score from the
iris position in the eye; mouth openness. Definitions and units in ``docs/engagement.md``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

EYEBALL_RADIUS_EYE_WIDTHS = 0.42
"""Eyeball radius (about 12 mm) in units of the eye's corner-to-corner width (about 29 mm)."""

HEAD_FACING_TOLERANCE_DEG = 30.0
"""Width (sigma) of the head-toward-camera term of the engagement score."""

# MediaPipe face-mesh landmark indices. "Right"/"left" are the person's own sides: the right
# eye appears on the image's left.
RIGHT_EYE = {"outer": 33, "inner": 133, "top": (160, 158), "bottom": (144, 153), "iris": 468}
LEFT_EYE = {"outer": 263, "inner": 362, "top": (385, 387), "bottom": (380, 373), "iris": 473}
INNER_LIPS = (13, 14)  # upper and lower inner lip, on the midline
_FOREHEAD, CHIN = 10, 152

POSE_LANDMARKS = (1, 152, 33, 263, 61, 291)
"""Mesh indices head pose is solved from: nose tip, chin, eye outer corners, mouth corners."""

POSE_MODEL_POINTS = np.array(
    [
        # MediaPipe's canonical_face_model.obj (Apache-2.0; centimetres, y up, z toward the
        # viewer), converted here to OpenCV camera axes (x right, y down, z away): (x, -y, -z).
        (0.000000, 1.126865, -7.475604),
        (0.000000, 9.403378, -4.264492),
        (-4.445859, -2.663991, -3.173422),
        (4.445859, -2.663991, -3.173422),
        (-2.456206, 4.342621, -4.283884),
        (2.456206, 4.342621, -4.283884),
    ],
    dtype=np.float64,
)
"""The :data:`POSE_LANDMARKS` of MediaPipe's canonical face, ``(6, 3)`` centimetres in OpenCV camera axes."""


def head_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Rotation (3, 3) and translation (3,) of the canonical face in camera axes, or None.

    Pinhole camera with focal length ``max(width, height)`` pixels (about a 53 degree field of
    view) centred on the frame, no distortion: the usual guess for an uncalibrated camera.
    """
    image_points = landmarks[list(POSE_LANDMARKS), :2].astype(np.float64)
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    # start from a face looking into the camera at the distance its eye spacing implies
    eye_px = np.linalg.norm(image_points[3] - image_points[2])
    if eye_px < 1:
        return None
    depth = focal * np.linalg.norm(POSE_MODEL_POINTS[3] - POSE_MODEL_POINTS[2]) / eye_px
    nose = image_points[0]
    tvec = np.array([(nose[0] - width / 2) * depth / focal, (nose[1] - height / 2) * depth / focal, depth])
    tvec = tvec - POSE_MODEL_POINTS[0]
    ok, rvec, tvec = cv2.solvePnP(
        POSE_MODEL_POINTS, image_points, camera, None, rvec=np.zeros(3), tvec=tvec, useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    tvec = np.asarray(tvec, dtype=np.float64).reshape(3)
    if not ok or tvec[2] <= 0:
        return None
    rotation, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3))
    return rotation, tvec


def eye_aspect_ratio(landmarks: np.ndarray, eye: dict) -> float:
    """(|top1 - bottom1| + |top2 - bottom2|) / (2 |outer - inner|), on landmarks of 2 or 3 coordinates."""
    p = landmarks
    vertical = sum(np.linalg.norm(p[t] - p[b]) for t, b in zip(eye["top"], eye["bottom"]))
    return float(vertical / (2 * np.linalg.norm(p[eye["outer"]] - p[eye["inner"]])))


def _eye_yaw(landmarks: np.ndarray, rotation: np.ndarray) -> float:
    """Horizontal rotation of the eyes within the head, radians, positive toward the image's right.

    The iris centre's offset from the midpoint of the eye corners, expressed in head axes
    (``rotation.T``, so head yaw is not counted twice) along the eye line, in units of the
    eye's width, mapped through an eyeball of radius :data:`EYEBALL_RADIUS_EYE_WIDTHS`.
    Averaged over both eyes.
    """
    offsets = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        # image-left corner to image-right corner
        left, right = (eye["outer"], eye["inner"]) if eye is RIGHT_EYE else (eye["inner"], eye["outer"])
        axis = rotation.T @ (landmarks[right] - landmarks[left])
        middle = (landmarks[right] + landmarks[left]) / 2
        offset = rotation.T @ (landmarks[eye["iris"]] - middle)
        width = np.linalg.norm(axis)
        if width > 0:
            offsets.append(offset[0] / width)
    if not offsets:
        return 0.0
    return float(np.arcsin(np.clip(np.mean(offsets) / EYEBALL_RADIUS_EYE_WIDTHS, -1.0, 1.0)))


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two 3-D vectors, degrees in [0, 180]."""
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def face_geometry(landmarks: np.ndarray, width: int, height: int, gaze_tolerance_deg: float) -> dict[str, float]:
    """Head pose, eye and mouth openness, gaze score and head-facing term of one face.

    ``landmarks`` ``(478, 3)`` are in the pixels of a ``width`` x ``height`` frame. Returns
    ``yaw``, ``pitch``, ``roll`` (degrees), ``eye_openness`` (eye aspect ratio), ``gaze_on_camera``
    and ``head_facing`` (scores in [0, 1]) and ``mouth_openness`` (inner-lip gap / face height);
    pose, gaze and head facing are NaN when the pose cannot be solved.
    """
    ear = (eye_aspect_ratio(landmarks, RIGHT_EYE) + eye_aspect_ratio(landmarks, LEFT_EYE)) / 2
    face_height = np.linalg.norm(landmarks[_FOREHEAD] - landmarks[CHIN])
    mouth = float(np.linalg.norm(landmarks[INNER_LIPS[0]] - landmarks[INNER_LIPS[1]]) / face_height)
    values = {
        "yaw": np.nan,
        "pitch": np.nan,
        "roll": np.nan,
        "eye_openness": ear,
        "gaze_on_camera": np.nan,
        "mouth_openness": mouth,
        "head_facing": np.nan,
    }
    pose = head_pose(landmarks, width, height)
    if pose is None:
        return values
    rotation, translation = pose
    forward = rotation @ np.array([0.0, 0.0, -1.0])  # where the face points, camera axes
    across = rotation @ np.array([1.0, 0.0, 0.0])  # the face's right-to-left axis
    to_camera = -translation
    eye_yaw = _eye_yaw(landmarks, rotation)
    gaze = rotation @ np.array([math.sin(eye_yaw), 0.0, -math.cos(eye_yaw)])
    values.update(
        yaw=math.degrees(math.atan2(forward[0], -forward[2])),
        pitch=math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2]))),
        roll=math.degrees(math.atan2(across[1], across[0])),
        gaze_on_camera=math.exp(-0.5 * (_angle_deg(gaze, to_camera) / gaze_tolerance_deg) ** 2),
        head_facing=math.exp(-0.5 * (_angle_deg(forward, to_camera) / HEAD_FACING_TOLERANCE_DEG) ** 2),
    )
    return values

