"""The face columns of the segment grid: one face per segment, its evidence, and how much it counts.

:func:`face_segment_table` reduces the frames table of :meth:`multimodal_ser.face.FaceAnalyzer.analyze`
to the grid. Per segment it picks the face of the person speaking, averages that face's
(calibrated) frame probabilities, and says how far that average can be trusted:

- ``face_frames``: how many sampled frames of that face the average is over;
- ``face_static``: the face did not move at all over the segment, or over :data:`STATIC_MIN_SPAN_S`
  around a shorter one (at least :data:`STATIC_MIN_FRAMES` frames, the mouth still and the
  expression probabilities constant to within video noise): a still photo, a frozen stream. Such a
  face says nothing about this moment;
- ``face_quality`` in [0, 1]: the weight fusion gives the face on this segment, relative to a face
  seen well: ``coverage * min(1, frames / FULL_WEIGHT_FRAMES)``, times :data:`STATIC_FACE_WEIGHT`
  when the face is static. ``coverage`` is the share of the segment's sampled frames in which the
  face was found.

The thresholds were measured on the project's sample interview (a photo under slow synthetic zoom,
sway and roll) and the seven real talking-head clips of ../shared/data, in windows of 4 s at
4 frames/s (``face_*`` probabilities from the calibrated packaged head):

| | mouth openness SD | mean SD of the 7 probabilities |
|---|---|---|
| photo (6 windows) | 0.0013-0.0029 | 0.0011-0.0018 |
| real faces (14 windows) | 0.011-0.040 | 0.0079-0.104 |
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import grid as grid_module
from ..labels import EMOTIONS
from .frames import PROB_COLUMNS

STATIC_MIN_FRAMES = 3
"""A face needs at least this many frames in a segment before it can be called static."""

STATIC_MAX_MOUTH_SD = 0.006
"""A static face's mouth openness varies less than this (standard deviation) over the segment."""

STATIC_MAX_PROBABILITY_SD = 0.004
"""... and its expression probabilities less than this (mean standard deviation over the labels)."""

STATIC_MIN_SPAN_S = 2.0
"""A shorter segment is judged static on the same face's frames over this many seconds around its
middle: in a 0.8 s pause of a real talking head (3 frames) the closed mouth and the expression
varied as little as a photo's (mouth SD 0.0005, probabilities 0.0027)."""

STATIC_FACE_WEIGHT = 0.05
"""``face_quality`` factor of a static face: it still shows, but counts for little."""

FULL_WEIGHT_FRAMES = 3
"""A face averaged over fewer frames than this gets proportionally less weight."""


def is_static(rows: pd.DataFrame) -> bool:
    """Whether one face's frames (rows of a frames table) show no movement at all.

    Needs :data:`STATIC_MIN_FRAMES` frames; the mouth openness (where the mesh gave one on at
    least that many frames) and the expression probabilities must both stay constant to within
    :data:`STATIC_MAX_MOUTH_SD` and :data:`STATIC_MAX_PROBABILITY_SD`.
    """
    if len(rows) < STATIC_MIN_FRAMES:
        return False
    mouth = rows["mouth_openness"].dropna().to_numpy(dtype=np.float64)
    if len(mouth) >= STATIC_MIN_FRAMES and mouth.std() >= STATIC_MAX_MOUTH_SD:
        return False
    spread = rows[PROB_COLUMNS].to_numpy(dtype=np.float64).std(axis=0).mean()
    return bool(spread < STATIC_MAX_PROBABILITY_SD)


def face_quality(*, frames: int, sampled: int, static: bool) -> float:
    """The weight of a face's evidence on one segment, in [0, 1] (see the module docstring).

    Args:
        frames: frames of the chosen face in the segment.
        sampled: sampled video frames in the segment (>= ``frames``; 0 or fewer counts as ``frames``).
        static: whether :func:`is_static` holds.
    """
    if frames <= 0:
        return 0.0
    coverage = min(1.0, frames / sampled) if sampled > 0 else 1.0
    quality = coverage * min(1.0, frames / FULL_WEIGHT_FRAMES)
    return float(quality * (STATIC_FACE_WEIGHT if static else 1.0))


SPEAKER_MIN_CORRELATION = 0.2
"""Mouth openness must correlate at least this much with speech energy to pick the speaking face."""

SPEAKER_MIN_MOUTH_MOVEMENT = 0.01
"""Standard deviation of mouth openness over a segment above which a face counts as talking.

A speaker's measures 0.021-0.044 over each talking-head clip of ../shared/data, sampled at 2 or
8 frames/s; a still face's is about 0.
"""


def _valid_energy(speech_energy) -> tuple[np.ndarray, np.ndarray] | None:
    if speech_energy is None:
        return None
    if not isinstance(speech_energy, pd.DataFrame) or not {"time", "energy"} <= set(speech_energy.columns):
        raise ValueError("speech_energy must be a DataFrame with columns 'time' (s) and 'energy'")
    ordered = speech_energy.sort_values("time", kind="stable")
    times = ordered["time"].to_numpy(dtype=np.float64)
    values = ordered["energy"].to_numpy(dtype=np.float64)
    if not (np.isfinite(times).all() and np.isfinite(values).all()):
        raise ValueError("speech_energy holds non-finite times or energies")
    return times, values


def _window_means(energy: tuple[np.ndarray, np.ndarray], times: np.ndarray, half: float) -> np.ndarray:
    """Mean energy over ``[t - half, t + half]`` for each ``t`` (interpolated where no sample lies inside)."""
    e_times, values = energy
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    lo = np.searchsorted(e_times, times - half, side="left")
    hi = np.searchsorted(e_times, times + half, side="right")
    counts = hi - lo
    sums = cumulative[hi] - cumulative[lo]
    interpolated = np.interp(times, e_times, values) if len(e_times) else np.zeros(len(times))
    return np.where(counts > 0, sums / np.maximum(counts, 1), interpolated)


def _speaking_face(faces: pd.DataFrame, energy, step: float) -> tuple[int, bool]:
    """The face id most likely speaking among ``faces`` (rows of one segment), and whether the
    speaking-face signal singled it out (step 2 of face_segment_table)."""
    ids = faces["face_id"].unique()
    mouths = {int(i): faces.loc[faces["face_id"] == i, ["time", "mouth_openness"]].dropna() for i in ids}
    movement = {face_id: float(m["mouth_openness"].std(ddof=0)) for face_id, m in mouths.items() if len(m) >= 2}
    talking = {face_id: m for face_id, m in movement.items() if m > SPEAKER_MIN_MOUTH_MOVEMENT}
    if energy is not None:
        correlations = {}
        for face_id in talking:
            mouth = mouths[face_id]
            if len(mouth) >= 3:
                activity = _window_means(energy, mouth["time"].to_numpy(), max(step / 2, 0.01))
                if activity.std() > 0:
                    correlations[face_id] = float(np.corrcoef(mouth["mouth_openness"].to_numpy(), activity)[0, 1])
        if correlations and max(correlations.values()) >= SPEAKER_MIN_CORRELATION:
            return max(correlations, key=correlations.get), True
    if len(ids) == 1:
        return int(ids[0]), False
    if talking:
        return max(talking, key=talking.get), False
    areas = (faces["box_w"] * faces["box_h"]).groupby(faces["face_id"]).mean()
    return int(areas.idxmax()), False


def speaker_faces(speakers: pd.Series, face_speaker_ids: pd.Series) -> pd.Series:
    """Per segment, the face track most often judged speaking over all segments of its speaker.

    Args:
        speakers: shape ``(n,)``, the grid's speaker labels (str, None where unknown).
        face_speaker_ids: shape ``(n,)``, nullable int face ids (``face_speaker_id``).

    Returns:
        Nullable ``Int64`` Series of ``n`` (same index as ``speakers``): null where the segment has
        no speaker, where no segment of that speaker has a judged face, or where two faces tie.
    """
    known = pd.DataFrame({"speaker": speakers.to_numpy(dtype=object), "face": face_speaker_ids.to_numpy(dtype=object)}).dropna()
    chosen = {}
    for speaker, group in known.groupby("speaker"):
        counts = group["face"].value_counts()
        if len(counts) == 1 or counts.iloc[0] > counts.iloc[1]:
            chosen[speaker] = int(counts.index[0])
    return pd.Series([chosen.get(s) for s in speakers], index=speakers.index, dtype="Int64")


def face_segment_table(
    frames: pd.DataFrame, grid: pd.DataFrame, *, speech_energy: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The face columns of the segment grid, one row per grid row, in the grid's order.

    Per segment, the sampled frames with ``start <= time < end`` are used (a segment shorter
    than the sampling interval takes the nearest sampled frame within half an interval). Among
    the faces seen there, the one of the person speaking is chosen:

    1. faces whose mouth moves count as talking: the standard deviation of their mouth openness
       over the segment (at least 2 frames) exceeds :data:`SPEAKER_MIN_MOUTH_MOVEMENT`;
    2. with ``speech_energy``, among talking faces with at least 3 frames, the one whose mouth
       openness correlates best with the speech energy averaged around each frame, if Pearson
       r >= :data:`SPEAKER_MIN_CORRELATION` (this separates a speaker from someone smiling or
       chewing; alone, a correlation over a few frames is too noisy to trust);
    3. else the talking face whose mouth moves most;
    4. else (nobody's mouth moves, or no mesh) the largest face (mean box area).

    Only step 2 judges a face to be speaking (``face_speaker_id``); the other steps pick the face
    to read the expression from, without saying that it speaks. Over the segments of each
    ``speaker`` label, the face judged speaking most often is that speaker's face
    (``speaker_face_id``, :func:`speaker_faces`). Faces are track numbers: nobody is identified.

    Its expression probabilities (calibrated per frame by the expression model) are averaged over
    the segment (renormalised), not multiplied: frames of one face are not independent evidence.
    So are its embeddings. A segment where no face is seen has ``face_present=False`` and nulls.

    Args:
        frames: the frames table from :meth:`FaceAnalyzer.analyze` (possibly empty).
        grid: the segment grid (``start``, ``end`` in seconds, ``speaker``; see :mod:`multimodal_ser.grid`).
        speech_energy: optional DataFrame with ``time`` (s) and ``energy`` (any non-negative
            speech activity measure: RMS, VAD probability, ...), e.g. at 50 Hz.

    Returns:
        :func:`multimodal_ser.grid.modality_table` for ``"face"``: ``face_present``,
        ``face_label``, ``face_confidence``, ``face_<label>``, ``face_embedding``; then
        ``face_frames`` (int, 0 where absent), ``face_static`` (nullable bool) and
        ``face_quality`` (float in [0, 1], NaN where absent), see the module docstring;
        ``face_speaker_id`` (nullable int: the face track judged speaking, step 2 above) and
        ``speaker_face_id`` (nullable int: the face track of the segment's speaker).
    """
    needed = {"time", "face_id", "face_present", "box_w", "box_h", "mouth_openness", "face_embedding", *PROB_COLUMNS}
    if missing := needed - set(frames.columns):
        raise ValueError(f"frames lacks the columns {sorted(missing)}; expected a FaceAnalyzer frames table")
    if missing := {"start", "end", "speaker"} - set(grid.columns):
        raise ValueError(f"grid lacks the columns {sorted(missing)}; expected a segment grid")
    energy = _valid_energy(speech_energy)
    faces = frames[frames["face_present"].astype(bool)]
    sampled = np.unique(frames["time"].to_numpy(dtype=np.float64))
    step = float(np.median(np.diff(sampled))) if len(sampled) > 1 else 0.0
    n = len(grid)
    probabilities = np.full((n, len(EMOTIONS)), np.nan)
    present = np.zeros(n, dtype=bool)
    n_frames = np.zeros(n, dtype=np.int64)
    static = np.zeros(n, dtype=bool)
    quality = np.full(n, np.nan)
    speaking: list[int | None] = [None] * n
    embeddings = None
    if not faces.empty:
        embeddings = np.zeros((n, len(faces["face_embedding"].iloc[0])), dtype=np.float32)
    face_times = faces["time"].to_numpy()
    for i, (start, end) in enumerate(zip(grid["start"].to_numpy(), grid["end"].to_numpy())):
        inside = (face_times >= start) & (face_times < end)
        if not inside.any() and len(sampled) and not ((sampled >= start) & (sampled < end)).any():
            nearest = sampled[np.argmin(np.abs(sampled - (start + end) / 2))]
            if start - step / 2 <= nearest <= end + step / 2:
                inside = face_times == nearest
        if not inside.any():
            continue
        segment = faces[inside]
        face_id, judged = _speaking_face(segment, energy, step)
        speaking[i] = face_id if judged else None
        rows = segment[segment["face_id"] == face_id]
        mean = rows[PROB_COLUMNS].to_numpy(dtype=np.float64).mean(axis=0)
        probabilities[i] = mean / mean.sum()
        present[i] = True
        embeddings[i] = np.mean(np.stack(rows["face_embedding"].to_list()), axis=0)
        n_frames[i] = rows["time"].nunique()
        # judged over at least STATIC_MIN_SPAN_S around the segment's middle: a real face can hold
        # still through a short pause, a photo holds still through everything
        half = max(end - start, STATIC_MIN_SPAN_S) / 2
        middle = (start + end) / 2
        around = faces[(faces["face_id"] == face_id) & (face_times >= middle - half) & (face_times < middle + half)]
        static[i] = is_static(around)
        in_segment = int(((sampled >= start) & (sampled < end)).sum())
        quality[i] = face_quality(frames=int(n_frames[i]), sampled=max(in_segment, int(n_frames[i])), static=bool(static[i]))
    table = grid_module.modality_table("face", probabilities, present, embeddings)
    table["face_frames"] = pd.array(np.where(present, n_frames, 0), dtype="int64")
    table["face_static"] = pd.array([bool(s) if p else None for s, p in zip(static, present)], dtype="boolean")
    table["face_quality"] = np.where(present, quality, np.nan)
    table["face_speaker_id"] = pd.array(speaking, dtype="Int64")
    table["speaker_face_id"] = speaker_faces(grid["speaker"].reset_index(drop=True), table["face_speaker_id"]).array
    return table
