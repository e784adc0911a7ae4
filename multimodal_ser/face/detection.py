"""Faces and their landmarks in one frame, with MediaPipe's bundled models.

1. **Detection.** MediaPipe's legacy ``solutions.face_detection``: the full-range model
   (``model_selection=1``, faces up to about 5 m away), and, in a frame where it finds no face,
   the short-range model for the close-ups the sparse full-range model misses (on one
   talking-head clip it found the face in 75% of frames alone, 100% with both). Run on every frame
   of the seven talking heads, the sample interview and the sample classroom at 4 fps, the
   short-range model found a face the full-range one had missed only in frames where that found
   none, so it runs only there: the face branch then samples 42-43 frames/s instead of 39 on
   those videos (``benchmarks/face_speed.py``, 2 threads, both versions in turn, twice). Faces
   whose box is smaller than ``min_face_px`` on its shorter side are skipped; at most
   ``max_faces`` faces per frame are kept, largest first.
2. **Landmarks.** ``solutions.face_mesh`` with ``refine_landmarks=True`` (478 points: 468 mesh
   points plus 5 per iris), run in static-image mode on a square crop of
   :data:`MESH_CROP_SCALE` times each detected box, so faces far from the camera get landmarks
   too (the mesh's own detector only sees near faces) and each mesh belongs to a known box. The
   ``.tflite`` models ship inside the mediapipe 0.10.21 wheel; their sha256 are checked before
   first use (:func:`check_mediapipe_models`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from ..files import sha256_file

logger = logging.getLogger(__name__)

SAME_FACE_IOU = 0.5
"""Detections of one frame overlapping this much are the same face (the first is kept)."""

MESH_CROP_SCALE = 1.6
"""Side of the square crop the face mesh runs on, relative to the detected box's longer side."""

MESH_CROP_MAX_PX = 384
"""The mesh crop is downscaled to at most this side (the mesh model itself works at 192 px)."""

MEDIAPIPE_MODELS = {
    # path inside the mediapipe package: sha256 (mediapipe 0.10.21)
    "modules/face_detection/face_detection_full_range_sparse.tflite": (
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"
    ),
    "modules/face_detection/face_detection_short_range.tflite": (
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
    ),
    "modules/face_landmark/face_landmark_with_attention.tflite": (
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"
    ),
}
"""The model files the branch loads, ``{path inside the mediapipe package: sha256}``."""

MEDIAPIPE_ROLES = {
    "face_detection": "face_detection_full_range_sparse.tflite",
    "face_mesh_detection": "face_detection_short_range.tflite",
    "face_mesh": "face_landmark_with_attention.tflite",
}
"""The role of each MediaPipe model file in the provenance metadata, ``{role: file name}``."""


@dataclass
class Face:
    """One face in one frame, in displayed-frame pixels."""

    box: np.ndarray  # (x, y, w, h), unclipped
    eyes: np.ndarray  # (2, 2): the detector's right-eye and left-eye keypoints (x, y)
    landmarks: np.ndarray | None = None  # (478, 3): x, y, z in pixels; z < 0 toward the camera


def check_mediapipe_models() -> dict[str, str]:
    """Verify the sha256 of :data:`MEDIAPIPE_MODELS`; return ``{file name: sha256}``.

    Raises:
        ModelError: a file is missing or its digest differs (another mediapipe version).
    """
    import mediapipe

    root = Path(mediapipe.__file__).parent
    found = {}
    for relative, expected in MEDIAPIPE_MODELS.items():
        path = root / relative
        if not path.is_file():
            raise ModelError(f"{path}: missing; the face branch needs mediapipe==0.10.21, which bundles its models")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(
                f"{path}: sha256 is {actual}, expected {expected} (mediapipe 0.10.21); the file is corrupt or "
                f"another mediapipe version is installed"
            )
        found[path.name] = actual
    return found


class MediaPipeGraphs:
    """The MediaPipe graphs of one analysis (a context manager that closes them).

    ``far``: full-range face detector (``model_selection=1``); ``near``: short-range detector
    (``model_selection=0``), for frames where the full-range one finds no face (close-ups it misses);
    ``mesh``: face mesh with iris refinement, static-image mode (it runs on per-face crops).
    """

    def __init__(self, min_detection_confidence: float):
        from mediapipe.python.solutions import face_detection, face_mesh

        self.far = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_detection_confidence)
        self.near = face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_detection_confidence)
        self.mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=2, refine_landmarks=True, min_detection_confidence=0.5
        )

    def __enter__(self) -> MediaPipeGraphs:
        return self

    def __exit__(self, *exc) -> None:
        for graph in (self.far, self.near, self.mesh):
            graph.close()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes, in [0, 1]."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of the part of ``box`` inside a ``width`` x ``height`` frame."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
    return float(x0), float(y0), float(max(x1 - x0, 0.0)), float(max(y1 - y0, 0.0))


def detect_faces(rgb: np.ndarray, graphs: MediaPipeGraphs, *, min_face_px: int, max_faces: int) -> list[Face]:
    """Faces of one RGB frame ``(h, w, 3)``, largest first: full-range detections, or near-range
    ones where it finds none; boxes shorter than ``min_face_px`` pixels are skipped, at most ``max_faces`` kept."""
    height, width = rgb.shape[:2]
    detected: list[Face] = []
    for detector in (graphs.far, graphs.near):
        for detection in detector.process(rgb).detections or []:
            rel = detection.location_data.relative_bounding_box
            box = np.array([rel.xmin * width, rel.ymin * height, rel.width * width, rel.height * height])
            if not any(iou(box, f.box) >= SAME_FACE_IOU for f in detected):
                keypoints = detection.location_data.relative_keypoints
                eyes = np.array([[keypoints[i].x * width, keypoints[i].y * height] for i in (0, 1)])
                detected.append(Face(box=box, eyes=eyes))
        if detected:
            break
    faces = [f for f in detected if min(clip_box(f.box, width, height)[2:]) >= min_face_px]
    faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
    if len(faces) > max_faces:
        logger.debug("%d faces in a frame; keeping the %d largest", len(faces), max_faces)
    return faces[:max_faces]


def add_landmarks(rgb: np.ndarray, face: Face, mesh) -> None:
    """Run the face ``mesh`` on a square crop around ``face`` and store its landmarks in frame
    pixels in ``face.landmarks`` (left None when the mesh finds no face)."""
    x, y, w, h = face.box
    side = MESH_CROP_SCALE * max(w, h)
    size = int(min(side, MESH_CROP_MAX_PX))
    scale = size / side
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    affine = np.array([[scale, 0, -scale * x0], [0, scale, -scale * y0]])
    crop = cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    result = mesh.process(crop)
    if not result.multi_face_landmarks:
        return
    found = [
        np.array([(p.x * size, p.y * size, p.z * size) for p in lm.landmark]) / scale
        for lm in result.multi_face_landmarks
    ]
    centre = np.array([size / 2, size / 2]) / scale
    best = min(found, key=lambda pts: np.linalg.norm(pts[:468, :2].mean(axis=0) - centre))
    best[:, 0] += x0
    best[:, 1] += y0
    face.landmarks = best
