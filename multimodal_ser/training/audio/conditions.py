"""Versions of the training and test audio: clean, alone in a window, noisy, transformed, telephone.

A :class:`Condition` names one version; :func:`transform_clip` applies the per-clip ones (pitch,
tempo, telephone) before clips are packed into windows, while noise is added per window at render
time (:func:`multimodal_ser.training.audio.corpus.render_window`).
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import scipy.signal

from ...media import SAMPLE_RATE

ISOLATED = "isolated"
"""each clip alone in its own window, its segment found by voice activity (how a short file is analysed)."""
NOISE_KINDS: tuple[str, ...] = ("white", "babble")
TRANSFORM_KINDS: tuple[str, ...] = ("pitch", "tempo", "telephone")
_NO_VALUE = ("clean", ISOLATED, "telephone")

TELEPHONE_BAND_HZ = (300.0, 3400.0)
"""the pass band of narrow-band telephony (ITU-T G.712)."""
TELEPHONE_RATE = 8000
MU = 255
"""G.711 mu-law companding constant; samples are quantised to 8 bits after companding."""


@dataclasses.dataclass(frozen=True)
class Condition:
    """A version of the audio.

    ``kind`` is ``"clean"``; ``"white"`` or ``"babble"`` noise at ``value`` dB SNR (added per window
    at render time); ``"pitch"``, each clip shifted by ``value`` semitones; ``"tempo"``, each clip
    sped up by the factor ``value`` with its pitch kept; ``"telephone"``, each clip through a
    narrow-band telephone channel (:func:`telephone_channel`); or ``"isolated"``, each clean clip
    alone in its own window, its segment found by voice activity.
    """

    kind: str
    value: float | None = None

    def __post_init__(self):
        if self.kind in _NO_VALUE:
            if self.value is not None:
                raise ValueError(f"the {self.kind} condition takes no value")
        elif self.kind in NOISE_KINDS + TRANSFORM_KINDS:
            if self.value is None or not np.isfinite(self.value):
                raise ValueError(f"a {self.kind} condition needs a finite value, not {self.value}")
            if self.kind == "tempo" and not 0.5 <= self.value <= 2.0:
                raise ValueError(f"a tempo factor must be in [0.5, 2], not {self.value}")
        else:
            raise ValueError(f"condition kind must be one of {('clean', ISOLATED) + NOISE_KINDS + TRANSFORM_KINDS}, not {self.kind!r}")

    @property
    def name(self) -> str:
        if self.kind in _NO_VALUE:
            return self.kind
        if self.kind == "pitch":
            return f"pitch@{self.value:+g}st"
        if self.kind == "tempo":
            return f"tempo@x{self.value:g}"
        return f"{self.kind}@{self.value:g}dB"

    @classmethod
    def parse(cls, name: str) -> Condition:
        """The condition whose :attr:`name` is ``name`` (``"clean"``, ``"isolated"``, ``"telephone"``,
        ``"white@10dB"``, ``"pitch@-2st"``, ``"tempo@x1.1"``)."""
        kind, _, value = name.partition("@")
        units = {"white": "dB", "babble": "dB", "pitch": "st"}
        try:
            if kind in _NO_VALUE and not value:
                return cls(kind)
            if kind in units and value.endswith(units[kind]):
                return cls(kind, float(value[: -len(units[kind])]))
            if kind == "tempo" and value.startswith("x"):
                return cls(kind, float(value[1:]))
        except ValueError:
            pass
        raise ValueError(
            f"{name!r} is not a condition name like 'clean', 'isolated', 'telephone', 'white@10dB', 'babble@0dB', "
            "'pitch@+2st', 'tempo@x0.9'"
        )


CLEAN = Condition("clean")


def telephone_channel(audio: np.ndarray) -> np.ndarray:
    """A clip as a narrow-band phone call delivers it, back at 16 kHz: shape ``(n_samples,)`` float32.

    Band-limited to :data:`TELEPHONE_BAND_HZ`, resampled to 8 kHz, mu-law companded and quantised to
    8 bits (G.711), then resampled to 16 kHz, as an 8-kHz call is decoded for the encoder.
    """
    sos = scipy.signal.butter(6, TELEPHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = scipy.signal.resample_poly(scipy.signal.sosfilt(sos, audio.astype(np.float64)), TELEPHONE_RATE, SAMPLE_RATE)
    narrow = np.clip(narrow, -1.0, 1.0)
    companded = np.sign(narrow) * np.log1p(MU * np.abs(narrow)) / np.log1p(MU)
    quantised = np.round(companded * 127.0) / 127.0
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(MU)) / MU
    wide = scipy.signal.resample_poly(expanded, SAMPLE_RATE, TELEPHONE_RATE)[: len(audio)]
    return np.clip(np.pad(wide, (0, len(audio) - len(wide))), -1.0, 1.0).astype(np.float32)


def transform_clip(audio: np.ndarray, condition: Condition) -> np.ndarray:
    """One clip under a per-clip condition (pitch, tempo or telephone), float32 in [-1, 1]."""
    if condition.kind == "pitch":
        out = librosa.effects.pitch_shift(audio, sr=SAMPLE_RATE, n_steps=condition.value)
    elif condition.kind == "tempo":
        out = librosa.effects.time_stretch(audio, rate=condition.value)
    elif condition.kind == "telephone":
        return telephone_channel(audio)
    else:
        raise ValueError(f"{condition.name} is not a clip transform ({TRANSFORM_KINDS})")
    return np.clip(out, -1.0, 1.0).astype(np.float32)
