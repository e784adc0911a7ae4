"""The speech encoder: one Whisper encoder pass per window of up to 30 s, shared by ASR and the voice.

The encoder runs once per window; its last output feeds the ASR decoder, and every layer's hidden
states feed the audio-emotion branch (emotion lives largely in the intermediate layers). Each
window is first brought to one active-speech level (:mod:`multimodal_ser.loudness`), so neither
branch depends on how loud the recording happened to be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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
WINDOW_FRAMES = WINDOW_SECONDS * FRAMES_PER_SECOND
"""encoder output frames of a window (1500)."""
PADDING_STRIDE = 5
"""Padding frames that one stands for in :meth:`SpeechEncoder.encode_alone`. Against a window of
their own, on 60 RAVDESS clips, the voice probabilities moved by 0.005 on average at stride 5,
0.010 at 10 and 0.012 at 20; cutting the clips 10 ms later moves them by 0.009. Stride 5 stays
inside that noise on clips cut mid-sentence too, where stride 10 moved them twice as far."""
MAX_PACKED_SECONDS = 8.0
"""Clips of at most this many seconds are worth encoding together (:meth:`SpeechEncoder.encode_alone`,
``mser evaluate --pack``, ``--pack`` of several recordings); longer ones keep windows of their own."""
ALONE_BATCH = 8
"""clips per batch in :meth:`SpeechEncoder.encode_alone`."""
LENGTH_GRID_SECONDS = 0.5
""":meth:`SpeechEncoder.encode_alone` pads each clip with silence to a multiple of this, so that clips of
like length share one layout of rows and their padding states."""
SHARED_PADDING_CLIPS = 4
"""Clips of one length group that :meth:`SpeechEncoder.encode_alone` encodes whole; the rest attend to
their mean padding states. On 25 RAVDESS clips of 3.0 s the voice moved from the solo path 0.0094
with the padding of 4 clips, 0.0092 with 8, 0.0113 with 2 and 0.0124 with 1, against 0.0103 for a
10-ms cut of the clip."""
_EXACT_TAIL = 4
"""padding frames right after a clip that :meth:`SpeechEncoder.encode_alone` keeps one by one
(the convolutions still see the clip's last samples there)."""


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
    """shape ``(m, d_model)``: the encoder's final (layer-normed) output, the ASR decoder's input;
    ``m`` is 1500, or fewer for :meth:`SpeechEncoder.encode_alone`, whose rows past the clip each
    stand for several padding frames (``output_counts``)."""
    hidden_states: torch.Tensor
    """shape ``(n_layers + 1, n, d_model)``: the embedding (conv + positions) and each block's
    output; ``n`` is 1500, or the clip's own frames for :meth:`SpeechEncoder.encode_alone`."""
    output_counts: np.ndarray | None = None
    """shape ``(m,)`` int: window frames each row of ``output`` stands for, summing to 1500 (None: one each)."""

    @property
    def n_frames(self) -> int:
        """Encoder frames that cover real audio (the rest is padding)."""
        return max(1, min(seconds_to_frames(self.duration), self.hidden_states.shape[1]))

    def decoder_input(self, length: int) -> torch.Tensor:
        """``output`` as a memory of ``length`` rows for the ASR decoder, shape ``(length, d_model)``.

        Every row of ``output`` is kept once and the rest of ``length`` is spread evenly over the
        copies the rows stand for: ``length`` 1500 gives the whole window (each row repeated its
        count), ``len(output)`` gives ``output`` itself. A decoder reads fewer rows faster, each
        padding row then weighing less in its cross-attention than the frames it stands for.
        """
        rows = len(self.output)
        if not rows <= length <= WINDOW_FRAMES:
            raise ValueError(f"a memory of {length} rows: this window has {rows} rows for {WINDOW_FRAMES} frames")
        if length == rows:
            return self.output
        counts = np.ones(rows, dtype=np.int64) if self.output_counts is None else self.output_counts
        row_of_frame = np.repeat(np.arange(rows), counts)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        copies = np.setdiff1d(np.arange(len(row_of_frame)), first)  # frames past each row's first
        chosen = copies[np.round(np.linspace(0, len(copies) - 1, length - rows)).astype(np.int64)] if length > rows else []
        return self.output[row_of_frame[np.sort(np.concatenate([first, chosen]))]]

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

    def _checked(self, audio: np.ndarray) -> None:
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono, shape (n_samples,), not {audio.shape}")
        if len(audio) > WINDOW_SAMPLES:
            raise ValueError(f"a window holds at most {WINDOW_SECONDS} s, not {len(audio) / SAMPLE_RATE:.2f} s")

    def _convolved(self, audio: np.ndarray) -> torch.Tensor:
        """The convolutional front end over ``audio`` zero-padded to 30 s, shape ``(1, 1500, d_model)``, without positions."""
        from whisper.audio import log_mel_spectrogram, pad_or_trim

        mel = log_mel_spectrogram(torch.from_numpy(pad_or_trim(audio)), self.model.dims.n_mels)
        encoder = self.model.encoder
        x = torch.nn.functional.gelu(encoder.conv1(mel[None]))
        return torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)

    def _convolved_alone(self, audio: np.ndarray, exact: int, padding: np.ndarray) -> torch.Tensor:
        """:meth:`_convolved` at its first ``exact`` frames and then at the frames ``padding``
        (all past them), shape ``(exact + len(padding), d_model)``, from the convolutions over the
        audio and 1 s of silence only: past the clip's last samples every mel frame of the
        zero-padded window is the same floor, so every convolved frame is the same but the
        window's last (the convolutions' own zero padding follows it)."""
        from whisper.audio import log_mel_spectrogram

        tail = np.zeros(SAMPLE_RATE, dtype=np.float32)
        if len(audio) + len(tail) > WINDOW_SAMPLES:
            return self._convolved(audio)[0, np.concatenate([np.arange(exact), padding])]
        mel = log_mel_spectrogram(torch.from_numpy(np.concatenate([audio, tail])), self.model.dims.n_mels)
        encoder = self.model.encoder

        def convolved(m: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(encoder.conv1(m[None]))))[0].T

        x = convolved(mel)  # to 50 frames past the clip: the floor holds from 3 past it to 2 before the end
        floor = x[exact + 20]
        last = convolved(mel[:, -8:])[-1]  # floor columns only, ending as the window ends
        return torch.cat([x[:exact], torch.where(torch.from_numpy(padding == WINDOW_FRAMES - 1)[:, None], last, floor)])

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, *, offset: float = 0.0, normalise: bool | None = None) -> EncodedWindow:
        """Encode up to 30 s of 16 kHz mono audio, shape ``(n_samples,)``, starting at ``offset`` s.

        ``normalise`` overrides the encoder's own setting for this window (False: the pieces of a
        packed window were already brought to the speech level one by one).
        """
        self._checked(audio)
        audio = np.ascontiguousarray(normalise_loudness(audio) if (self.normalise if normalise is None else normalise) else audio, dtype=np.float32)
        encoder = self.model.encoder
        x = self._convolved(audio) + encoder.positional_embedding
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

    @torch.inference_mode()
    def encode_alone(self, clips: Sequence[np.ndarray], *, offsets: Sequence[float] | None = None, stride: int = PADDING_STRIDE,
                     share_padding: int = SHARED_PADDING_CLIPS) -> list[EncodedWindow]:
        """Encode short clips, each nearly as :meth:`encode` encodes it alone, at a fraction of the cost.

        Alone in its window, a clip of ``n`` frames shares the encoder's self-attention with
        ``1500 - n`` frames of padding, which cost most of the pass. Here every ``stride``-th
        padding frame stands for the ``stride`` around it: it is attended with a bias of
        ``log stride`` on its logits, as that many near-equal keys would be, and it is one row of
        the window's output (:attr:`EncodedWindow.output_counts`). With ``stride=1`` and no
        sharing the result is that of :meth:`encode` (up to rounding).

        The padding's states hardly depend on the clip, only on where the padding starts. So the
        clips are grouped by length (each zero-padded to the next :data:`LENGTH_GRID_SECONDS`);
        the first ``share_padding`` clips of a group are encoded whole, and the others compute
        their own frames only, attending at each layer to the mean padding states of those
        (their output's padding rows are that mean too). A clip's result then depends a little on
        the clips beside it. :data:`PADDING_STRIDE` and :data:`SHARED_PADDING_CLIPS` keep the
        voice and the ASR within the noise of a 10-ms shift of the clip. Batches of :data:`ALONE_BATCH`.

        Args:
            clips: each shape ``(n_samples,)`` float32 at 16 kHz, at most 30 s, encoded as given
                (bring each to the speech level first when the encoder normalises).
            offsets: seconds where each clip starts on its recording's clock (default 0).
            stride: padding frames per representative.
            share_padding: clips of a length group encoded whole to lend their padding to the
                rest (0: every clip whole).

        Returns:
            One window per clip, whose hidden states cover the clip's frames only.
        """
        offsets = [0.0] * len(clips) if offsets is None else list(offsets)
        if len(offsets) != len(clips):
            raise ValueError(f"{len(offsets)} offsets for {len(clips)} clips")
        audios = [np.ascontiguousarray(clip, dtype=np.float32) for clip in clips]
        for audio in audios:
            self._checked(audio)
        groups: dict[int, list[int]] = {}
        for k, audio in enumerate(audios):
            groups.setdefault(_grid_frames(audio), []).append(k)
        windows: list[EncodedWindow | None] = [None] * len(clips)
        for frames, members in sorted(groups.items()):
            layout = _Layout.of(frames, stride)
            lenders = members if not 0 < share_padding < len(members) or layout.n_padding == 0 else members[:share_padding]
            padding_states = []
            for batch in _batches(lenders):
                encoded, states = self._whole_batch([audios[k] for k in batch], [offsets[k] for k in batch], layout)
                for k, window in zip(batch, encoded):
                    windows[k] = window
                padding_states.append(states)
            if len(lenders) == len(members):
                continue
            padding = torch.cat(padding_states).mean(dim=0)  # (n_layers + 1, n_padding, d_model)
            borrowers = members[len(lenders) :]
            for batch in _batches(borrowers):
                for k, window in zip(batch, self._borrowing_batch([audios[k] for k in batch], [offsets[k] for k in batch], layout, padding)):
                    windows[k] = window
        return windows

    def _embedded(self, audios: list[np.ndarray], layout: _Layout) -> torch.Tensor:
        """Conv front end plus positions at the layout's rows, shape ``(batch, n_rows, d_model)``."""
        padded = layout.n_exact - _EXACT_TAIL
        rows = [
            self._convolved_alone(np.pad(audio, (0, max(0, padded * 2 * HOP_LENGTH - len(audio)))), layout.n_exact, layout.positions[layout.n_exact :])
            for audio in audios
        ]
        return torch.stack(rows) + self.model.encoder.positional_embedding[layout.positions]

    def _windows(self, audios, offsets, layout: _Layout, output: torch.Tensor, hidden: list[torch.Tensor]) -> list[EncodedWindow]:
        states = torch.stack(hidden, dim=1)  # (batch, n_layers + 1, rows, d_model)
        return [
            EncodedWindow(
                offset=offset,
                duration=len(audio) / SAMPLE_RATE,
                audio=audio,
                output=output[i].clone(),
                hidden_states=states[i, :, : _frames(audio)].clone(),
                output_counts=layout.counts,
            )
            for i, (audio, offset) in enumerate(zip(audios, offsets))
        ]

    def _whole_batch(self, audios, offsets, layout: _Layout) -> tuple[list[EncodedWindow], torch.Tensor]:
        """Clips encoded with every row of ``layout``; also their padding rows' states, shape
        ``(batch, n_layers + 1, n_padding, d_model)``."""
        encoder = self.model.encoder
        x = self._embedded(audios, layout)
        hidden = [x]
        for block in encoder.blocks:
            x = block_with_bias(block, x, layout.bias)
            hidden.append(x)
        padding = torch.stack([h[:, layout.n_exact :] for h in hidden], dim=1)
        return self._windows(audios, offsets, layout, encoder.ln_post(x), hidden), padding

    def _borrowing_batch(self, audios, offsets, layout: _Layout, padding: torch.Tensor) -> list[EncodedWindow]:
        """Clips that compute their own rows only and attend to ``padding``, shape ``(n_layers + 1, n_padding, d_model)``,
        the states of their layout's padding rows lent by other clips."""
        encoder = self.model.encoder
        x = self._embedded(audios, layout)[:, : layout.n_exact]
        hidden = [x]
        for block, lent in zip(encoder.blocks, padding):
            x = block_with_bias(block, x, layout.bias, lent=lent)
            hidden.append(x)
        output = encoder.ln_post(torch.cat([x, padding[-1].expand(len(audios), -1, -1)], dim=1))
        return self._windows(audios, offsets, layout, output, hidden)


def _frames(audio: np.ndarray) -> int:
    """Encoder frames that ``audio`` covers (its last, partial one included)."""
    return -(-len(audio) // (2 * HOP_LENGTH))


def _grid_frames(audio: np.ndarray) -> int:
    """:func:`_frames` rounded up to the length grid of :meth:`SpeechEncoder.encode_alone`."""
    grid = seconds_to_frames(LENGTH_GRID_SECONDS)
    return min(-(-_frames(audio) // grid) * grid, WINDOW_FRAMES)


def _batches(members: list[int]) -> list[list[int]]:
    return [members[i : i + ALONE_BATCH] for i in range(0, len(members), ALONE_BATCH)]


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The rows :meth:`SpeechEncoder.encode_alone` computes for clips of up to ``frames`` frames."""

    n_exact: int
    """rows one per frame from the window start: the clip's frames and :data:`_EXACT_TAIL` more."""
    positions: np.ndarray
    """shape ``(rows,)`` int: the window frame each row stands at (a padding row at the middle of its frames)."""
    counts: np.ndarray
    """shape ``(rows,)`` int: window frames each row stands for, summing to 1500."""
    bias: torch.Tensor
    """shape ``(1, 1, 1, rows)``: ``log counts``, each row's weight as a key."""

    @classmethod
    def of(cls, frames: int, stride: int) -> _Layout:
        exact = min(frames + _EXACT_TAIL, WINDOW_FRAMES)
        starts = np.arange(exact, WINDOW_FRAMES, stride)
        counts = np.concatenate([np.ones(exact, dtype=np.int64), np.minimum(stride, WINDOW_FRAMES - starts)])
        positions = np.concatenate([np.arange(exact), starts + counts[exact:] // 2])
        return cls(exact, positions, counts, torch.from_numpy(np.log(counts)).float()[None, None, None])

    @property
    def n_padding(self) -> int:
        return len(self.counts) - self.n_exact


def block_with_bias(block, x: torch.Tensor, bias: torch.Tensor, *, lent: torch.Tensor | None = None) -> torch.Tensor:
    """One Whisper encoder block over ``x``, shape ``(batch, n, d_model)``, its self-attention
    logits offset by ``bias``, shape ``(batch or 1, 1, 1, keys)`` (a weight per key; -inf: no key).
    The keys are ``x``'s rows, then ``lent``'s, shape ``(m, d_model)``: rows every row attends to
    whose states are given, not computed here (``keys`` is ``n + m``)."""
    attention = block.attn
    h = block.attn_ln(x)
    batch, n, width = h.shape
    keys = attention.key(h), attention.value(h)
    if lent is not None:
        h_lent = block.attn_ln(lent)
        keys = tuple(torch.cat([own, project(h_lent).expand(batch, -1, -1)], dim=1) for own, project in zip(keys, (attention.key, attention.value)))
    q, k, v = (t.view(batch, t.shape[1], attention.n_head, -1).transpose(1, 2) for t in (attention.query(h), *keys))
    mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    x = x + attention.out(mixed.transpose(1, 2).reshape(batch, n, width))
    return x + block.mlp(block.mlp_ln(x))
