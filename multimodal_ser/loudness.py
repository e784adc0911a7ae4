"""Speech level of a window and the gain that brings it to one reference level.

Recordings arrive at any level: a studio corpus at -45 dBFS, a talk show at -15 dBFS, a phone
call wherever its gain control left it. Whisper's log-mel input is not level-invariant, and the
voice head must not learn that "angry" means "louder than the corpus it was trained on". So every
encoder window is scaled, before the encoder and before prosody, so that its *active speech*
reaches :data:`TARGET_DBFS`. Differences of level inside a window (a raised voice in a calm
conversation) are kept; the recording's absolute level is not.

Level is measured on 20-ms frames: the mean power of the frames within :data:`ACTIVE_RANGE_DB` of
the window's loud end (its 95th-percentile frame), so pauses and background do not count.
"""

from __future__ import annotations

import numpy as np

from .media import SAMPLE_RATE

TARGET_DBFS = -23.0
"""dBFS: the active-speech level every window is brought to."""
ACTIVE_RANGE_DB = 30.0
"""dB below the loud end of a window within which a frame counts as active."""
MAX_GAIN_DB = 40.0
"""dB: the largest boost or cut, so near-silence is not blown up into noise."""
SILENCE_DBFS = -80.0
"""dBFS: a window whose loud end is quieter than this is left as it is."""
PEAK_LIMIT = 0.99
"""the gain is lowered where it would push a sample past this (no clipping)."""
_FRAME = SAMPLE_RATE // 50


def active_level_dbfs(audio: np.ndarray) -> float:
    """Active-speech level of ``audio`` (shape ``(n_samples,)``, 16 kHz) in dBFS; -inf for silence."""
    n = len(audio) // _FRAME
    if n == 0:
        power = np.array([np.mean(np.square(audio, dtype=np.float64))]) if len(audio) else np.zeros(1)
    else:
        power = np.mean(np.square(audio[: n * _FRAME].reshape(n, _FRAME), dtype=np.float64), axis=1)
    frames_db = 10 * np.log10(power + 1e-20)  # digital silence: -200 dB
    loud_end = np.percentile(frames_db, 95)
    if not loud_end > SILENCE_DBFS:
        return float("-inf")
    active = power[frames_db >= loud_end - ACTIVE_RANGE_DB]
    return float(10 * np.log10(np.mean(active)))


def normalise_loudness(audio: np.ndarray) -> np.ndarray:
    """``audio`` scaled so its active speech is at :data:`TARGET_DBFS` (float32, same shape).

    The gain is limited to +-:data:`MAX_GAIN_DB` and so that no sample exceeds :data:`PEAK_LIMIT`;
    a silent window is returned unchanged.
    """
    level = active_level_dbfs(audio)
    if not np.isfinite(level):
        return np.asarray(audio, dtype=np.float32)
    gain = 10 ** (np.clip(TARGET_DBFS - level, -MAX_GAIN_DB, MAX_GAIN_DB) / 20)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak * gain > PEAK_LIMIT:
        gain = PEAK_LIMIT / peak
    return (np.asarray(audio, dtype=np.float64) * gain).astype(np.float32)
