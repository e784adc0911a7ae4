"""Prosodic and spectral voice features of one speech segment: pitch, loudness, rate, voice quality, MFCC.

Every contour here is computed on the speech encoder's time grid: one analysis frame every
:data:`HOP_LENGTH` samples (20 ms, :data:`~multimodal_ser.encoder.FRAMES_PER_SECOND` = 50 frames/s),
frame ``t`` centred at ``t / 50`` s from the segment's first sample. A segment's contour frames
therefore line up with its Whisper encoder frames, for frame-level fusion, and :func:`prosody_features`
and :func:`mfcc_stats` summarise them into fixed-size vectors for the segment-level head.

Input everywhere: mono float32 audio at :data:`~multimodal_ser.media.SAMPLE_RATE` (16 kHz), shape
``(n_samples,)``. Undefined statistics (for example pitch statistics of a segment without a voiced
frame) are NaN, never a made-up value; consumers decide how to impute them.

Example::

    c = contours(audio)                 # c.f0_hz, c.rms_db, ... each shape (n_frames,)
    p = prosody_features(audio)         # shape (len(PROSODY_FEATURES),)
    m = mfcc_stats(audio)               # shape (2 * N_MFCC,)
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import scipy.signal

from .encoder import FRAMES_PER_SECOND
from .media import SAMPLE_RATE

HOP_LENGTH = SAMPLE_RATE // FRAMES_PER_SECOND
"""samples between analysis frames: 320 (20 ms), the encoder's frame period."""
FRAME_LENGTH = 1024
"""samples per analysis frame: 64 ms, at least two periods of the lowest F0 searched."""
F0_MIN_HZ = 60.0
"""lowest fundamental frequency searched (deep male voices)."""
F0_MAX_HZ = 600.0
"""highest fundamental frequency searched (high-arousal female speech)."""
VOICING_THRESHOLD = 0.5
"""a frame is voiced when its normalised autocorrelation at the F0 period reaches this ..."""
VOICING_RANGE_DB = 35.0
"""... and its level is within this many dB of the segment's loudest frame ..."""
SILENCE_FLOOR_DB = -60.0
"""... and above this absolute level (dBFS)."""
PAUSE_RANGE_DB = 30.0
"""frames this far below the segment's loudest frame count as pause."""
N_MFCC = 20
"""MFCC coefficients summarised by :func:`mfcc_stats` (c0 included)."""
MFCC_N_FFT = 512
"""samples per MFCC frame (32 ms)."""
MFCC_N_MELS = 40

_ST_REFERENCE_HZ = 100.0
_LEVEL_FLOOR_DB = -100.0

PROSODY_FEATURES: tuple[str, ...] = (
    "f0_median_hz",  # Hz, voiced frames
    "f0_mean_st",  # semitones re 100 Hz, voiced frames
    "f0_std_st",  # semitones
    "f0_p10_st",  # semitones re 100 Hz
    "f0_p90_st",  # semitones re 100 Hz
    "f0_range_st",  # p90 - p10, semitones
    "f0_slope_st_per_s",  # least-squares slope of the voiced contour, semitones / s
    "f0_delta_st",  # mean |change| between consecutive voiced frames, semitones / frame (20 ms)
    "voiced_fraction",  # voiced frames / frames, in [0, 1]
    "rms_mean_db",  # dBFS, mean of the frame-level contour
    "rms_std_db",  # dB
    "rms_p90_db",  # dBFS
    "rms_range_db",  # p90 - p10, dB
    "loudness_mean_db",  # A-weighted frame power, dB re full scale, mean over frames
    "loudness_p90_db",  # dB
    "syllable_rate_hz",  # loudness peaks inside voiced stretches per second (speaking-rate proxy)
    "voiced_run_rate_hz",  # voiced stretches per second
    "pause_fraction",  # frames more than PAUSE_RANGE_DB below the loudest, in [0, 1]
    "jitter_ratio",  # mean |period change| / mean period over consecutive voiced frames (frame-level proxy)
    "shimmer_db",  # mean |level change| between consecutive voiced frames, dB (frame-level proxy)
    "hnr_db",  # mean over voiced frames of 10 log10(r / (1 - r)), r = periodicity
    "spectral_flatness",  # mean over frames, in [0, 1]
    "spectral_centroid_hz",  # mean over frames, Hz
    "alpha_ratio_db",  # energy 1-5 kHz over 50 Hz-1 kHz of the mean spectrum, dB (spectral tilt)
    "hammarberg_db",  # peak 0-2 kHz over peak 2-5 kHz of the mean spectrum, dB
)
"""Names (and units) of :func:`prosody_features`' outputs, in order."""

MFCC_FEATURES: tuple[str, ...] = tuple(f"mfcc{i}_mean" for i in range(N_MFCC)) + tuple(
    f"mfcc{i}_std" for i in range(N_MFCC)
)
"""Names of :func:`mfcc_stats`' outputs, in order."""


@dataclasses.dataclass(frozen=True)
class Contours:
    """Frame-level prosody of one segment, 50 frames/s, frame ``t`` centred at ``t / 50`` s."""

    f0_hz: np.ndarray
    """shape ``(n,)`` float: fundamental frequency in Hz, NaN where the frame is unvoiced."""
    periodicity: np.ndarray
    """shape ``(n,)`` float in [0, 1]: normalised autocorrelation at the F0 period (1 = perfectly periodic)."""
    voiced: np.ndarray
    """shape ``(n,)`` bool."""
    rms_db: np.ndarray
    """shape ``(n,)`` float: frame RMS level in dBFS (full-scale sine = -3 dB), floored at -100."""

    @property
    def times(self) -> np.ndarray:
        """shape ``(n,)``: frame centres in seconds from the segment's first sample."""
        return np.arange(len(self.rms_db)) / FRAMES_PER_SECOND


def _valid_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono, shape (n_samples,), not {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    audio = audio.astype(np.float32, copy=False)
    if len(audio) < FRAME_LENGTH:  # one full analysis frame at least
        audio = np.pad(audio, (0, FRAME_LENGTH - len(audio)))
    return audio


def _frames(audio: np.ndarray) -> np.ndarray:
    """Centred frames, shape ``(n_frames, FRAME_LENGTH)``, as librosa frames with ``center=True``."""
    padded = np.pad(audio, FRAME_LENGTH // 2)
    return librosa.util.frame(padded, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH, axis=0)


def _periodicity(frames: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of each frame at its lag (and the best of the two neighbours)."""
    n_frames, length = frames.shape
    spectrum = np.fft.rfft(frames, n=2 * length, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :length]
    energy = np.cumsum(frames**2, axis=1)
    total = energy[:, -1:]
    best = np.zeros(n_frames)
    for shift in (-1, 0, 1):
        lag = np.clip(lags + shift, 1, length - 1)
        rows = np.arange(n_frames)
        head = energy[rows, length - 1 - lag]  # sum of x[n]^2 for n < length - lag
        tail = total[:, 0] - energy[rows, lag - 1]  # sum of x[n]^2 for n >= lag
        r = autocorr[rows, lag] / np.sqrt(np.maximum(head * tail, 1e-20))
        best = np.maximum(best, r)
    return np.clip(best, 0.0, 1.0)


def contours(audio: np.ndarray) -> Contours:
    """F0 (YIN), periodicity, voicing and level of every 20-ms frame of a 16-kHz segment.

    Args:
        audio: shape ``(n_samples,)`` float at 16 kHz; segments shorter than one analysis frame
            (64 ms) are zero-padded to it.

    Returns:
        :class:`Contours` with ``1 + n_samples // 320`` frames.
    """
    audio = _valid_audio(audio)
    frames = _frames(audio)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    rms_db = np.maximum(20 * np.log10(np.maximum(rms, 1e-10)), _LEVEL_FLOOR_DB)
    f0 = librosa.yin(
        audio, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=SAMPLE_RATE, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH
    )[: len(rms_db)]
    lags = np.round(SAMPLE_RATE / f0).astype(int)
    periodicity = _periodicity(frames.astype(np.float64), lags)
    voiced = (
        (periodicity >= VOICING_THRESHOLD)
        & (rms_db >= rms_db.max() - VOICING_RANGE_DB)
        & (rms_db > SILENCE_FLOOR_DB)
    )
    return Contours(f0_hz=np.where(voiced, f0, np.nan), periodicity=periodicity, voiced=voiced, rms_db=rms_db)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the True stretches of a bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _count_peaks(level_db: np.ndarray, *, prominence_db: float = 3.0, min_distance: int = 4) -> int:
    if len(level_db) < 3:
        return 0
    smooth = np.convolve(level_db, np.ones(3) / 3, mode="same")
    peaks, _ = scipy.signal.find_peaks(smooth, prominence=prominence_db, distance=min_distance)
    return len(peaks)


def prosody_features(audio: np.ndarray) -> np.ndarray:
    """Segment-level prosodic and spectral statistics, named and unit-documented in :data:`PROSODY_FEATURES`.

    Args:
        audio: shape ``(n_samples,)`` float at 16 kHz: the segment's samples.

    Returns:
        shape ``(len(PROSODY_FEATURES),)`` float32. Pitch and voice-quality statistics are NaN when
        the segment has fewer than two voiced frames.
    """
    audio = _valid_audio(audio)
    c = contours(audio)
    n = len(c.rms_db)
    duration = len(audio) / SAMPLE_RATE
    out = dict.fromkeys(PROSODY_FEATURES, np.nan)

    voiced_idx = np.flatnonzero(c.voiced)
    out["voiced_fraction"] = len(voiced_idx) / n
    if len(voiced_idx) >= 2:
        f0 = c.f0_hz[voiced_idx]
        st = 12 * np.log2(f0 / _ST_REFERENCE_HZ)
        p10, p90 = np.percentile(st, [10, 90])
        out.update(
            f0_median_hz=float(np.median(f0)),
            f0_mean_st=float(st.mean()),
            f0_std_st=float(st.std()),
            f0_p10_st=float(p10),
            f0_p90_st=float(p90),
            f0_range_st=float(p90 - p10),
            f0_slope_st_per_s=float(np.polyfit(c.times[voiced_idx], st, 1)[0]),
        )
        consecutive = np.flatnonzero(np.diff(voiced_idx) == 1)
        if len(consecutive):
            a, b = voiced_idx[consecutive], voiced_idx[consecutive] + 1
            st_all = 12 * np.log2(c.f0_hz / _ST_REFERENCE_HZ)
            period = 1.0 / c.f0_hz
            out["f0_delta_st"] = float(np.mean(np.abs(st_all[b] - st_all[a])))
            out["jitter_ratio"] = float(np.mean(np.abs(period[b] - period[a])) / np.mean(period[voiced_idx]))
            out["shimmer_db"] = float(np.mean(np.abs(c.rms_db[b] - c.rms_db[a])))
        r = np.clip(c.periodicity[voiced_idx], 1e-3, 0.999)
        out["hnr_db"] = float(np.mean(10 * np.log10(r / (1 - r))))

    p10_db, p90_db = np.percentile(c.rms_db, [10, 90])
    out.update(
        rms_mean_db=float(c.rms_db.mean()),
        rms_std_db=float(c.rms_db.std()),
        rms_p90_db=float(p90_db),
        rms_range_db=float(p90_db - p10_db),
        pause_fraction=float(np.mean(c.rms_db < c.rms_db.max() - PAUSE_RANGE_DB)),
    )

    power = np.abs(librosa.stft(audio, n_fft=FRAME_LENGTH, hop_length=HOP_LENGTH)) ** 2  # (bins, n)
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=FRAME_LENGTH)
    a_weight = np.zeros_like(freqs)  # DC carries no loudness (and A-weighting is -inf dB there)
    a_weight[1:] = 10 ** (librosa.A_weighting(freqs[1:], min_db=None) / 10)
    # Parseval: one-sided power summed over bins / (n_fft * sum(window^2) / 2) is the frame's mean square,
    # so an unweighted full-scale sine reads -3 dB, like rms_db.
    window_power = FRAME_LENGTH * np.sum(scipy.signal.get_window("hann", FRAME_LENGTH) ** 2) / 2
    loudness_db = 10 * np.log10(np.maximum((a_weight[:, None] * power).sum(axis=0) / window_power, 1e-10))
    loudness_db = np.maximum(loudness_db, _LEVEL_FLOOR_DB)
    out["loudness_mean_db"] = float(loudness_db.mean())
    out["loudness_p90_db"] = float(np.percentile(loudness_db, 90))
    runs = [(a, b) for a, b in _runs(c.voiced) if b - a >= 2]
    out["voiced_run_rate_hz"] = len(runs) / duration
    out["syllable_rate_hz"] = sum(_count_peaks(loudness_db[a:b]) or 1 for a, b in runs) / duration

    out["spectral_flatness"] = float(librosa.feature.spectral_flatness(S=np.sqrt(power)).mean())
    out["spectral_centroid_hz"] = float(librosa.feature.spectral_centroid(S=np.sqrt(power), freq=freqs).mean())
    mean_spectrum = power.mean(axis=1) + 1e-12
    low = mean_spectrum[(freqs >= 50) & (freqs < 1000)].sum()
    high = mean_spectrum[(freqs >= 1000) & (freqs < 5000)].sum()
    out["alpha_ratio_db"] = float(10 * np.log10(high / low))
    out["hammarberg_db"] = float(
        10 * np.log10(mean_spectrum[freqs < 2000].max() / mean_spectrum[(freqs >= 2000) & (freqs < 5000)].max())
    )
    return np.array([out[name] for name in PROSODY_FEATURES], dtype=np.float32)


def mfcc_stats(audio: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of :data:`N_MFCC` MFCCs (the classic SER recipe).

    32-ms frames every 20 ms, 40 mel bands up to 8 kHz, log power in dB.

    Returns:
        shape ``(2 * N_MFCC,)`` float32: the means of c0..c19, then their standard deviations.
    """
    audio = _valid_audio(audio)
    mfcc = librosa.feature.mfcc(
        y=audio, sr=SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=MFCC_N_FFT, hop_length=HOP_LENGTH, n_mels=MFCC_N_MELS
    )
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)
