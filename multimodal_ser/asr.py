"""Speech recognition from an already-encoded window: segments with word timestamps.

Two engines decode the same :class:`~multimodal_ser.encoder.EncodedWindow` (the encoder runs once,
upstream): ``ctranslate2`` (the faster-whisper runtime, int8 decoder; the default, measured faster
here) and ``openai-whisper`` (the PyTorch reference decoder). Both share the tokenizer, the
timestamp-token parsing and the word timing from cross-attention alignment.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .encoder import FRAMES_PER_SECOND, WINDOW_FRAMES, EncodedWindow

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 448
"""tokens a 30-s window's decoding may write (CTranslate2's and faster-whisper's limit)."""
TOKENS_PER_SECOND = 24
"""a shorter window may write 32 tokens and this many per second of it: no transcript measured
here came near (at most 22 a second, Urdu as Whisper writes it, on 2-s clips; English at most 3),
while a repetition loop (Whisper base loops on about a third of the URDU clips) stops at 80
tokens on a 2-s clip instead of 448."""


def max_new_tokens(seconds: float) -> int:
    """Tokens the decoding of a window of ``seconds`` may write (:data:`TOKENS_PER_SECOND`)."""
    return min(MAX_NEW_TOKENS, 32 + int(np.ceil(TOKENS_PER_SECOND * seconds)))


DECODE_BATCH = 4
"""windows CTranslate2 decodes together in :meth:`CTranslate2Transcriber.transcribe_many`: 4 halved
the decoding time per short clip here (0.24 s to 0.12 s); 8 gained nothing more."""


_PUNCTUATION_BEFORE = "\"'“¿([{-"
_PUNCTUATION_AFTER = "\"'.。,，!！?？:：”)]}、"


@dataclasses.dataclass(frozen=True)
class Word:
    word: str
    """as Whisper writes it, with its leading space."""
    start: float
    """seconds on the recording's clock."""
    end: float
    probability: float


@dataclasses.dataclass(frozen=True)
class AsrSegment:
    start: float
    """seconds on the recording's clock (the first word's start when words are timed)."""
    end: float
    text: str
    words: tuple[Word, ...]
    avg_logprob: float
    no_speech_prob: float


@dataclasses.dataclass(frozen=True)
class AsrOptions:
    """Decoding settings shared by both engines."""

    language: str | None = None
    """ISO code such as ``"en"``; None detects it on the first window with speech."""
    beam_size: int = 5
    word_timestamps: bool = True
    no_speech_threshold: float = 0.6
    """a window whose no-speech probability exceeds this and whose ``avg_logprob`` is below
    ``logprob_threshold`` is treated as silence (Whisper's rule against hallucinated text)."""
    logprob_threshold: float = -1.0

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, not {self.beam_size}")
        if not 0 < self.no_speech_threshold <= 1:
            raise ValueError(f"no_speech_threshold must be in (0, 1], not {self.no_speech_threshold}")
        if self.language is not None:
            from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

            if self.language.lower() not in LANGUAGES and self.language.lower() not in TO_LANGUAGE_CODE:
                raise ValueError(f"language must be a Whisper language code (en, de, fr, ... {len(LANGUAGES)} in all) or name, not {self.language!r}")


class Transcriber(Protocol):
    """What the pipeline needs from an ASR engine."""

    name: str
    language: str | None

    def detect_language(self, window: EncodedWindow) -> str: ...

    def transcribe(self, window: EncodedWindow) -> list[AsrSegment]: ...

    def transcribe_many(self, windows: Sequence[EncodedWindow], *, only: Collection[str] | None = None) -> list[tuple[str, list[AsrSegment]]]: ...

    def align(self, window: EncodedWindow, texts: list[str], spans: list[tuple[float, float]]) -> list[tuple[Word, ...]]: ...


def _outputs(windows: Sequence[EncodedWindow]) -> np.ndarray:
    """The windows' encoder outputs as one C-contiguous array, shape ``(n, m, d_model)`` float32:
    ``m`` the longest output's rows (1500 for a whole window), the others spread to as many
    (:meth:`~multimodal_ser.encoder.EncodedWindow.decoder_input`)."""
    rows = max(len(w.output) for w in windows)
    return np.ascontiguousarray(torch.stack([w.decoder_input(rows) for w in windows]).numpy())


def language_code(language: str) -> str:
    """ISO 639-1 code of a Whisper language code or name (``"de"``, ``"German"`` → ``"de"``)."""
    from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    key = language.lower()
    return key if key in LANGUAGES else TO_LANGUAGE_CODE[key]


def _tokenizer(multilingual: bool, language: str | None):
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(multilingual, num_languages=99 if multilingual else 1, language=language, task="transcribe")


def _split_segments(tokens: list[int], tokenizer, duration: float) -> list[tuple[float, float, list[int]]]:
    """Cut a decoded token sequence at its timestamp tokens: ``(start, end, text tokens)`` in window
    seconds. Other special tokens (a language token the decoder wrote mid-text) are no text."""
    begin = tokenizer.timestamp_begin
    segments, text, start = [], [], None
    for token in tokens:
        if token == tokenizer.eot:
            break
        if token >= begin:
            t = (token - begin) * 0.02
            if start is None:
                start = t
            elif text:
                segments.append((start, t, text))
                text, start = [], None
            else:
                start = t
        elif token < tokenizer.eot:
            text.append(token)
    if text:
        segments.append((start or 0.0, duration, text))
    return segments


def _words_from_path(
    tokenizer, text_tokens: list[int], text_indices: np.ndarray, time_indices: np.ndarray, token_probs: list[float]
) -> list[tuple[str, int, float, float, float]]:
    """Words with ``(word, first token index, start s, end s, probability)`` from a DTW path."""
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / FRAMES_PER_SECOND
    return [
        (word, int(i), float(jump_times[i]), float(jump_times[j]), float(np.mean(token_probs[i:j])))
        for word, i, j in zip(words, boundaries[:-1], boundaries[1:])
    ]


def _merge_punctuation(words: list[list]) -> list[list]:
    """Attach leading punctuation to the next word and trailing punctuation to the previous one."""
    merged: list[list] = []
    for w in words:
        if merged and w[0].strip() and all(c in _PUNCTUATION_AFTER for c in w[0].strip()) and not w[0].startswith(" "):
            merged[-1][0] += w[0]
            merged[-1][3] = w[3]
        else:
            merged.append(list(w))
    out: list[list] = []
    carry = ""
    for w in merged:
        if w[0].strip() and all(c in _PUNCTUATION_BEFORE for c in w[0].strip()) and w is not merged[-1]:
            carry += w[0]
            continue
        if carry:
            w[0] = (" " if carry.startswith(" ") else "") + carry.strip() + w[0].lstrip()
            carry = ""
        out.append(w)
    return out


def _assemble(
    window: EncodedWindow, tokenizer, segments: list[tuple[float, float, list[int]]], words, avg_logprob: float, no_speech_prob: float
) -> list[AsrSegment]:
    """Place segments and words on the recording's clock; a segment's times follow its words."""
    out = []
    first_token = 0
    words = _merge_punctuation(words) if words else []
    for start, end, tokens in segments:
        last_token = first_token + len(tokens)
        seg_words = tuple(
            Word(word=w, start=round(window.offset + s, 3), end=round(window.offset + max(e, s), 3), probability=p)
            for w, i, s, e, p in words
            if first_token <= i < last_token
        )
        first_token = last_token
        text = tokenizer.decode(tokens).strip()
        if not text:
            continue
        seg_start = seg_words[0].start if seg_words else window.offset + start
        seg_end = seg_words[-1].end if seg_words else window.offset + min(end, window.duration)
        out.append(
            AsrSegment(
                start=round(seg_start, 3),
                end=round(max(seg_end, seg_start + 0.02), 3),
                text=text,
                words=seg_words,
                avg_logprob=avg_logprob,
                no_speech_prob=no_speech_prob,
            )
        )
    return out


def _split_by_text(tokenizer, texts: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokens of several texts joined, with each text's ``[first, last)`` token range."""
    tokens, ranges = [], []
    for text in texts:
        ids = tokenizer.encode(" " + text.strip()) if text.strip() else []
        ranges.append((len(tokens), len(tokens) + len(ids)))
        tokens += ids
    return tokens, ranges


def _aligned_words(window: EncodedWindow, words, ranges, spans) -> list[tuple[Word, ...]]:
    """Words of each text, on the recording's clock, kept inside that text's ``(start, end)`` span."""
    out = []
    words = _merge_punctuation(words) if words else []
    for (first, last), (start, end) in zip(ranges, spans):
        mine = []
        for w, i, s, e, p in words:
            if first <= i < last:
                s = min(max(window.offset + s, start), end)
                e = min(max(window.offset + e, s), end)
                mine.append(Word(word=w, start=round(s, 3), end=round(e, 3), probability=p))
        out.append(tuple(mine))
    return out


class CTranslate2Transcriber:
    """Whisper decoding with CTranslate2 (the faster-whisper runtime) from a shared encoder output.

    Args:
        model_dir: a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ...).
        multilingual: whether the model has language tokens (base: yes; tiny.en: no).
        compute_type: CTranslate2 quantisation, ``"int8"`` by default.
        threads: decodings that may run at once, one CPU thread each. One window decodes on one
            thread: Whisper base's decoder steps are too small to share (beam 5 over the 23-s
            interview took 2.0-2.2 s on one thread, 2.4-3.1 s on two), and the other core is left
            to the work beside it. :meth:`transcribe_many` splits its batch among the threads
            (4 windows: 3.1-3.7 s against 4.5-5.2 s on two threads of one decoding).
    """

    name = "ctranslate2"

    def __init__(self, model_dir: str | Path, *, multilingual: bool, options: AsrOptions = AsrOptions(), compute_type: str = "int8", threads: int = 2):
        import ctranslate2

        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=compute_type, intra_threads=1, inter_threads=threads)
        self.threads = threads
        self.multilingual = multilingual
        self.options = options
        self.new_recording()

    def new_recording(self) -> None:
        """Forget the language detected in the previous recording (the option, if given, stays)."""
        self.language = self.options.language if self.multilingual else "en"

    def detect_language(self, window: EncodedWindow) -> str:
        """The recording's language: the option, else Whisper's detection on ``window`` (the first
        one asked), kept for every later window."""
        if self.language is None:
            (ranked,) = self.model.detect_language(self._features([window]))
            token, probability = ranked[0]
            self.language = token.strip("<|>")
            log.info("detected language %s (p=%.2f)", self.language, probability)
        return self.language

    def transcribe(self, window: EncodedWindow) -> list[AsrSegment]:
        """The window's segments, in the recording's language (:meth:`detect_language`)."""
        return self._decode([window], [self.detect_language(window)])[0]

    def transcribe_many(self, windows: Sequence[EncodedWindow], *, only: Collection[str] | None = None) -> list[tuple[str, list[AsrSegment]]]:
        """Each window a recording of its own, its language the option or else detected on it,
        decoded :data:`DECODE_BATCH` at a time (faster per window than one by one):
        ``(language, segments)`` per window; with ``only``, a window in another language is not
        decoded (no segments). Forgets the current recording's language."""
        self.new_recording()
        results = []
        for first in range(0, len(windows), DECODE_BATCH):
            batch = windows[first : first + DECODE_BATCH]
            outputs = _outputs(batch)
            languages = [self.language] * len(batch) if self.language is not None else self._detect_each(outputs)
            chosen = [i for i, language in enumerate(languages) if only is None or language in only]
            decoded = dict(zip(chosen, self._decode([batch[i] for i in chosen], [languages[i] for i in chosen], outputs[chosen]) if chosen else []))
            results += [(language, decoded.get(i, [])) for i, language in enumerate(languages)]
        return results

    def _detect_each(self, outputs: np.ndarray) -> list[str]:
        """The language of each window of ``outputs`` ``(n, 1500, d_model)``, the windows split
        among the threads (a detection runs on one: 4 windows took 0.41-0.47 s as one call,
        0.20-0.31 s as two at once)."""
        from concurrent.futures import ThreadPoolExecutor

        parts = [np.ascontiguousarray(part) for part in np.array_split(outputs, min(self.threads, len(outputs)))]
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="language") as pool:
            ranked = pool.map(lambda part: self.model.detect_language(self._ct2.StorageView.from_array(part)), parts)
            return [r[0][0].strip("<|>") for found in ranked for r in found]

    def _features(self, windows: Sequence[EncodedWindow]):
        return self._ct2.StorageView.from_array(_outputs(windows))

    def _decode(self, windows: Sequence[EncodedWindow], languages: list[str], outputs: np.ndarray | None = None) -> list[list[AsrSegment]]:
        """``outputs``: the windows' :func:`_outputs`, when the caller has them already."""
        outputs = _outputs(windows) if outputs is None else outputs
        tokenizers = [_tokenizer(self.multilingual, language) for language in languages]
        prompts = [list(tokenizer.sot_sequence) for tokenizer in tokenizers]
        parts = np.array_split(np.arange(len(windows)), min(self.threads, len(windows)))
        inputs = [np.ascontiguousarray(outputs[part]) for part in parts]  # alive until the results are in
        pending = [
            self.model.generate(
                self._ct2.StorageView.from_array(batch),
                [prompts[i] for i in part],
                asynchronous=True,
                beam_size=self.options.beam_size,
                return_scores=True,
                return_no_speech_prob=True,
                max_length=max_new_tokens(max(windows[i].duration for i in part)),
                suppress_blank=True,
                suppress_tokens=[-1],
                max_initial_timestamp_index=50,
            )
            for part, batch in zip(parts, inputs)
        ]
        results = [result.result() for part in pending for result in part]
        return [
            self._segments(window, outputs[i : i + 1], tokenizer, prompt, result)
            for i, (window, tokenizer, prompt, result) in enumerate(zip(windows, tokenizers, prompts, results, strict=True))
        ]

    def _segments(self, window: EncodedWindow, output: np.ndarray, tokenizer, prompt: list[int], result) -> list[AsrSegment]:
        """``output``: the window's encoder output, shape ``(1, 1500, d_model)``, for the word alignment."""
        tokens = result.sequences_ids[0]
        n_text = sum(1 for t in tokens if t < tokenizer.eot)
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        if result.no_speech_prob > self.options.no_speech_threshold and avg_logprob < self.options.logprob_threshold:
            return []
        segments = _split_segments(tokens, tokenizer, window.duration)
        words = []
        text_tokens = [t for _, _, seg in segments for t in seg]
        if self.options.word_timestamps and text_tokens and n_text:
            (alignment,) = self.model.align(self._ct2.StorageView.from_array(output), prompt, [text_tokens], window.n_frames * 2, median_filter_width=7)
            path = np.array(alignment.alignments)
            words = _words_from_path(tokenizer, text_tokens, path[:, 0], path[:, 1], alignment.text_token_probs)
        return _assemble(window, tokenizer, segments, words, avg_logprob, float(result.no_speech_prob))

    def align(self, window: EncodedWindow, texts: list[str], spans: list[tuple[float, float]]) -> list[tuple[Word, ...]]:
        """Word timings for known ``texts`` said within ``spans`` (recording seconds) of the window."""
        tokenizer = _tokenizer(self.multilingual, self.language or "en")
        tokens, ranges = _split_by_text(tokenizer, texts)
        if not tokens:
            return [()] * len(texts)
        (alignment,) = self.model.align(self._features([window]), list(tokenizer.sot_sequence), [tokens], window.n_frames * 2, median_filter_width=7)
        path = np.array(alignment.alignments)
        words = _words_from_path(tokenizer, tokens, path[:, 0], path[:, 1], alignment.text_token_probs)
        return _aligned_words(window, words, ranges, spans)


class OpenAIWhisperTranscriber:
    """Whisper decoding with openai-whisper's PyTorch decoder from a shared encoder output."""

    name = "openai-whisper"

    def __init__(self, model, *, options: AsrOptions = AsrOptions()):
        self.model = model
        self.multilingual = model.is_multilingual
        self.options = options
        self.new_recording()

    def new_recording(self) -> None:
        """Forget the language detected in the previous recording (the option, if given, stays)."""
        self.language = self.options.language if self.multilingual else "en"

    @torch.inference_mode()
    def detect_language(self, window: EncodedWindow) -> str:
        """The recording's language: the option, else Whisper's detection on ``window`` (the first
        one asked), kept for every later window."""
        if self.language is None:
            from whisper.decoding import detect_language

            _, (probs,) = detect_language(self.model, window.decoder_input(WINDOW_FRAMES)[None])
            self.language = max(probs, key=probs.get)
            log.info("detected language %s (p=%.2f)", self.language, probs[self.language])
        return self.language

    @torch.inference_mode()
    def transcribe(self, window: EncodedWindow) -> list[AsrSegment]:
        from whisper.decoding import DecodingOptions, decode

        features = window.decoder_input(WINDOW_FRAMES)[None]  # whisper reads a (1500, d_model) input as encoded
        self.detect_language(window)
        tokenizer = _tokenizer(self.multilingual, self.language)
        (result,) = decode(
            self.model,
            features,
            DecodingOptions(language=self.language, beam_size=self.options.beam_size, fp16=False, without_timestamps=False,
                            sample_len=min(max_new_tokens(window.duration), self.model.dims.n_text_ctx // 2)),  # whisper's own limit is half its context
        )
        if result.no_speech_prob > self.options.no_speech_threshold and result.avg_logprob < self.options.logprob_threshold:
            return []
        segments = _split_segments(result.tokens, tokenizer, window.duration)
        text_tokens = [t for _, _, seg in segments for t in seg]
        words = self._align(window, tokenizer, text_tokens) if self.options.word_timestamps and text_tokens else []
        return _assemble(window, tokenizer, segments, words, float(result.avg_logprob), float(result.no_speech_prob))

    def transcribe_many(self, windows: Sequence[EncodedWindow], *, only: Collection[str] | None = None) -> list[tuple[str, list[AsrSegment]]]:
        """Each window a recording of its own, its language the option or else detected on it,
        decoded one by one: ``(language, segments)`` per window; with ``only``, a window in another
        language is not decoded (no segments). Forgets the current recording's language."""
        results = []
        for window in windows:
            self.new_recording()
            language = self.detect_language(window)
            results.append((language, self.transcribe(window) if only is None or language in only else []))
        self.new_recording()
        return results

    def align(self, window: EncodedWindow, texts: list[str], spans: list[tuple[float, float]]) -> list[tuple[Word, ...]]:
        """Word timings for known ``texts`` said within ``spans`` (recording seconds) of the window."""
        tokenizer = _tokenizer(self.multilingual, self.language or "en")
        tokens, ranges = _split_by_text(tokenizer, texts)
        if not tokens:
            return [()] * len(texts)
        return _aligned_words(window, self._align(window, tokenizer, tokens), ranges, spans)

    @torch.inference_mode()
    def _align(self, window: EncodedWindow, tokenizer, text_tokens: list[int]):
        """Cross-attention DTW alignment of ``text_tokens`` (whisper's method, on the shared encoder output)."""
        from whisper.model import disable_sdpa
        from whisper.timing import dtw, median_filter

        tokens = torch.tensor([*tokenizer.sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot])
        qks: list[torch.Tensor | None] = [None] * len(self.model.decoder.blocks)
        hooks = [
            block.cross_attn.register_forward_hook(lambda _m, _i, outputs, index=i: qks.__setitem__(index, outputs[-1][0]))
            for i, block in enumerate(self.model.decoder.blocks)
        ]
        try:
            with disable_sdpa():
                logits = self.model.decoder(tokens[None], window.decoder_input(WINDOW_FRAMES)[None])[0]
        finally:
            for hook in hooks:
                hook.remove()
        probs = logits[len(tokenizer.sot_sequence) :, : tokenizer.eot].softmax(dim=-1)
        token_probs = probs[np.arange(len(text_tokens)), text_tokens].tolist()
        weights = torch.stack([qks[layer][head] for layer, head in self.model.alignment_heads.indices().T])
        weights = weights[:, :, : window.n_frames].softmax(dim=-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        matrix = median_filter((weights - mean) / std, 7).mean(axis=0)[len(tokenizer.sot_sequence) : -1]
        text_indices, time_indices = dtw(-matrix)
        return _words_from_path(tokenizer, text_tokens, text_indices, time_indices, token_probs)
