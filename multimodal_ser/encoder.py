"""The speech encoder: one Whisper encoder pass per window of up to 30 s, shared by ASR and the voice.

The encoder runs once per window; its last output feeds the ASR decoder, and every layer's hidden
states feed the audio-emotion branch (emotion lives largely in the intermediate layers). Each
window is first brought to one active-speech level (:mod:`multimodal_ser.loudness`), so neither
branch depends on how loud the recording happened to be.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .loudness import normalise_loudness
from .media import SAMPLE_RATE

WINDOW_SECONDS = 30
"""Whisper's fixed input length; shorter windows are zero-padded."""
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
HOP_LENGTH = 160
"""samples between mel frames: 10 ms."""
FRAMES_PER_SECOND = SAMPLE_RATE // (2 * HOP_LENGTH)
"""encoder output frames per second (50: 20 ms each; the second conv has stride 2)."""


def seconds_to_frames(seconds: float) -> int:
    """Encoder frame index at ``seconds`` from the window start."""
    return int(round(seconds * FRAMES_PER_SECOND))


@dataclasses.dataclass(frozen=True)
class EncodedWindow:
    """One encoder pass over ``audio`` that starts at ``offset`` seconds in the recording."""

    offset: float
    """seconds: where the window starts on the recording's clock."""
    duration: float
    """seconds of real (unpadded) audio in the window, at most :data:`WINDOW_SECONDS`."""
    audio: np.ndarray
    """shape ``(n_samples,)`` float32 at :data:`SAMPLE_RATE`: the window's samples as encoded
    (level-normalised when the encoder normalises), unpadded."""
    output: torch.Tensor
    """shape ``(1500, d_model)``: the encoder's final (layer-normed) output, the ASR decoder's input."""
    hidden_states: torch.Tensor
    """shape ``(n_layers + 1, 1500, d_model)``: the embedding (conv + positions) and each block's output."""

    @property
    def n_frames(self) -> int:
        """Encoder frames that cover real audio (the rest is padding)."""
        return max(1, min(seconds_to_frames(self.duration), self.output.shape[0]))

    def frames(self, start: float, end: float) -> torch.Tensor:
        """Hidden states of every layer between two recording times (seconds).

        Returns:
            shape ``(n_layers + 1, n, d_model)`` with ``n >= 1`` frames inside ``[start, end)``
            clipped to the window's real audio.
        """
        first = min(max(seconds_to_frames(start - self.offset), 0), self.n_frames - 1)
        last = min(max(seconds_to_frames(end - self.offset), first + 1), self.n_frames)
        return self.hidden_states[:, first:last]


class SpeechEncoder:
    """Whisper's audio encoder with every layer's output kept.

    Args:
        model: an openai-whisper model (see :func:`multimodal_ser.weights.load_openai_whisper`).
        normalise: bring each window to one speech level first (:func:`multimodal_ser.loudness.normalise_loudness`);
            the packaged voice head was trained that way. False encodes the samples as given.
    """

    def __init__(self, model, *, normalise: bool = True):
        self.model = model
        self.normalise = normalise
        self._captured: list[torch.Tensor] = []
        for block in model.encoder.blocks:
            block.register_forward_hook(lambda _module, _inputs, output: self._captured.append(output))

    @property
    def n_layers(self) -> int:
        """Hidden-state layers of an :class:`EncodedWindow`: the embedding and every block (7 for base)."""
        return len(self.model.encoder.blocks) + 1

    @property
    def d_model(self) -> int:
        """Width of each hidden state (512 for base)."""
        return self.model.dims.n_audio_state

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, *, offset: float = 0.0, normalise: bool | None = None) -> EncodedWindow:
        """Encode up to 30 s of 16 kHz mono audio, shape ``(n_samples,)``, starting at ``offset`` s.

        ``normalise`` overrides the encoder's own setting for this window (False: the pieces of a
        packed window were already brought to the speech level one by one).
        """
        from whisper.audio import log_mel_spectrogram, pad_or_trim

        if audio.ndim != 1:
            raise ValueError(f"audio must be mono, shape (n_samples,), not {audio.shape}")
        if len(audio) > WINDOW_SAMPLES:
            raise ValueError(f"a window holds at most {WINDOW_SECONDS} s, not {len(audio) / SAMPLE_RATE:.2f} s")
        audio = np.ascontiguousarray(normalise_loudness(audio) if (self.normalise if normalise is None else normalise) else audio, dtype=np.float32)
        mel = log_mel_spectrogram(torch.from_numpy(pad_or_trim(audio)), self.model.dims.n_mels)
        encoder = self.model.encoder
        x = torch.nn.functional.gelu(encoder.conv1(mel[None]))
        x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.positional_embedding
        self._captured.clear()
        embedded = x
        for block in encoder.blocks:
            x = block(x)
        hidden = torch.cat([embedded] + self._captured, dim=0)
        self._captured.clear()
        return EncodedWindow(
            offset=offset,
            duration=len(audio) / SAMPLE_RATE,
            audio=audio,
            output=encoder.ln_post(x)[0],
            hidden_states=hidden,
        )
