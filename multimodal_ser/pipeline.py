"""The analysis pipeline: one streaming pass over a recording, every branch on one segment grid.

    media ─► audio 16 kHz ─► VAD regions (or the user's transcript) ─► windows of ≤30 s
                                   └─► Whisper encoder, once per window ─┬─► ASR: segments + words
                                                                          └─► voice emotion per segment
    video frames ─► faces, meshes, tracks (in a thread meanwhile) ─────────► face expression
    segments + silent stretches ─► grid ─► text emotion, face expression ─► fusion ─► Timeline
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from .diarisation import SpeakerWindows, speaker_of
from .errors import MediaError, VoiceReferenceError
from .files import sha256_file
from .fusion import fused_columns
from .grid import absent_table, modality_table
from .labels import EMOTIONS
from .media import MediaInfo, iter_audio, probe
from .options import AnalysisOptions
from .registry import Models
from .speech_segments import SpeechSegment, recognised, segment_grid, split_long, voice_row, weighted_voice, words_table
from .timeline import Timeline
from .transcript import TranscriptSegment, read_transcript
from .windows import AudioWindow, KnownRegions, windows

if TYPE_CHECKING:
    from .asr import AsrSegment
    from .encoder import EncodedWindow
    from .voice_reference import VoiceReference

log = logging.getLogger(__name__)

PREPARE_GROUP = 16
"""recordings given to one :meth:`Analyzer.prepare` by ``mser batch`` and ``mser analyze`` (each prepared
short recording holds about 10 MB of encoder states until it is analysed)."""


@dataclasses.dataclass(frozen=True)
class _SharedPass:
    """A short recording's speech window encoded and transcribed with others by :meth:`Analyzer.prepare`."""

    audio: np.ndarray
    """the window's samples as the stream gave them (before level normalisation), to check they are the same."""
    encoded: EncodedWindow
    language: str
    segments: list[AsrSegment]


class Analyzer:
    """Loads the models once and analyses any number of recordings with the same options.

    Models are loaded on first use, so constructing an Analyzer is cheap and does no I/O.
    """

    def __init__(self, options: AnalysisOptions = AnalysisOptions()):
        self.options = options
        o = options
        self.models = Models(
            asr_model=o.asr_model, asr_engine=o.asr_engine, language=o.language, beam_size=o.beam_size, threads=o.threads,
            fps=o.fps, fusion=o.fusion, fusion_weights=o.fusion_weights,
        )
        """the models, each built on first use (:class:`multimodal_ser.registry.Models`)."""
        self._shared: dict[tuple[Path, float], _SharedPass] = {}
        """:meth:`prepare`'s passes by (resolved path, window offset), each taken by the analysis that uses it."""
        self._reference: VoiceReference | None = None
        """the ``voice_reference`` option's file, read on first use."""

    def check(self) -> None:
        """Load or check what a bad option can break before any media is read: the fusion (its
        ``fusion_weights`` file), the voice reference and the ASR language and beam size. (Whether the voice head can read
        the chosen Whisper is checked when both are loaded, before the first window is encoded.)

        Raises:
            ModelError: the fusion file is missing or invalid.
            VoiceReferenceError: the ``voice_reference`` file is missing or invalid.
            ValueError: an ASR option Whisper does not accept.
        """
        from .asr import AsrOptions

        AsrOptions(language=self.options.language, beam_size=self.options.beam_size)
        self.models.fusion()
        self._voice_reference()

    def prepare(self, paths: Sequence[str | os.PathLike]) -> None:
        """With the ``pack`` option, encode and transcribe the speech of the short recordings among
        ``paths`` (at most :data:`~multimodal_ser.encoder.MAX_PACKED_SECONDS`, all channels mixed)
        together, for the next :meth:`analyze` of each without a transcript: one batched encoder
        pass nearly as each alone (:meth:`~multimodal_ser.encoder.SpeechEncoder.encode_alone`) and
        batched decoding. Does nothing without ``pack``. A file that cannot be read here is left to
        :meth:`analyze`, which says why; what an earlier call prepared is forgotten."""
        from .encoder import MAX_PACKED_SECONDS
        from .loudness import normalise_loudness

        self._shared.clear()
        if not (self.options.pack and {"audio", "text"} & set(self.options.modalities)):
            return
        found: list[tuple[Path, AudioWindow]] = []
        for path in paths:
            try:
                info = probe(path)
                if info.has_audio and info.duration <= MAX_PACKED_SECONDS:
                    vad = self.models.vad()
                    vad.reset()
                    found += [(info.path, window) for window in windows(_channel_blocks(info, None), vad)]
            except Exception:  # noqa: BLE001 - analyze() meets the same error and reports it
                log.debug("%s: not prepared", path, exc_info=True)
        if not found:
            return
        encoder = self.models.encoder()
        audios = [normalise_loudness(w.audio) if encoder.normalise else w.audio for _, w in found]
        encoded = encoder.encode_alone(audios, offsets=[w.offset for _, w in found])
        heard = self.models.transcriber().transcribe_many(encoded)
        for (path, window), one, (language, segments) in zip(found, encoded, heard, strict=True):
            self._shared[path, window.offset] = _SharedPass(window.audio, one, language, segments)

    def _voice(self):
        """``(voice model, collection mean or None)``: the packaged head, or with the
        ``voice_reference`` option the collection head and that file's mean; None when the voice
        branch does not run."""
        if "audio" not in self.options.modalities:
            return None, None
        reference = self._voice_reference()
        if reference is None:
            return self.models.voice(), None
        from .voice import packaged_head_path

        return self.models.voice(packaged_head_path("collection")), reference.mean

    def _voice_reference(self) -> VoiceReference | None:
        """The ``voice_reference`` option's file, read once (None without the option).

        Raises:
            VoiceReferenceError: the file is missing or invalid, or does not fit the collection head.
        """
        if self._reference is None and self.options.voice_reference is not None:
            from .voice import packaged_head_path
            from .voice_reference import load_reference

            reference = load_reference(self.options.voice_reference)
            width = self.models.voice(packaged_head_path("collection")).head.n_features
            if len(reference.mean) != width:
                raise VoiceReferenceError(f"{self.options.voice_reference}: a mean of {len(reference.mean)} features; the collection head reads {width}")
            self._reference = reference
        return self._reference

    def voice_features(self, path: str | os.PathLike, *, progress: bool = False) -> np.ndarray:
        """The voice features (:func:`multimodal_ser.voice.segment_features`) of every speech segment
        of a recording, all channels mixed, segmented and encoded as :meth:`analyze` does: shape
        ``(n_segments, n_features)`` float32 (``(0, n_features)`` without speech), for a collection's
        reference (:mod:`multimodal_ser.voice_reference`).

        Raises:
            MediaError: the file cannot be read.
            ValueError: the options leave out the audio modality.
        """
        if "audio" not in self.options.modalities:
            raise ValueError("voice features need the audio modality")
        info = probe(path)
        speech, _ = self._speech_segments(info, None, None, _SpeechEnergy(), [], progress, diarise=False, keep_features=True)
        rows = [segment.voice["features"] for segment in speech if segment.voice is not None]
        voice, _ = self._voice()
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, voice.head.n_features), dtype=np.float32)

    # --- the pass ------------------------------------------------------------------------------

    def analyze(
        self,
        path: str | os.PathLike,
        *,
        transcript: str | os.PathLike | None = None,
        channel: int | None = None,
        speaker: str | None = None,
        progress: bool = False,
    ) -> Timeline:
        """Analyse one recording.

        Args:
            path: a video or audio file.
            transcript: SRT, WebVTT, JSON or CSV transcript that replaces ASR.
            channel: audio channel to analyse (0 = left, 1 = right), e.g. one side of a stereo
                call; None mixes all channels down to mono.
            speaker: name for the ``speaker`` column where the transcript gives none.
            progress: show a progress bar over the recording's duration.

        Raises:
            MediaError, TranscriptError: bad input, naming the file and the problem.
        """
        info = probe(path)
        if channel is not None and not 0 <= channel < max(info.audio_channels, 1):
            raise MediaError(f"{info.path}: has {info.audio_channels} audio channel(s); channel {channel} does not exist")
        notes: list[str] = []
        known = read_transcript(transcript, media_duration=info.duration) if transcript is not None else None
        energy = _SpeechEnergy()
        diarise = self.options.diarise and speaker is None and not any(s.speaker for s in known or [])
        with self._face_scan(info, progress) as face_scan:  # the video's frames, in a thread meanwhile
            speech, language = self._speech_segments(info, known, channel, energy, notes, progress, diarise)
            for segment in speech:
                segment.speaker = segment.speaker or speaker
            grid, speech_rows = segment_grid(speech, info.duration, self.options.gap_window)
            if not speech:
                notes.append("no speech found: the timeline has no speech segments")
            tables = [grid, self._audio_columns(grid, speech_rows, speech)]
            text_table, text_ids = self._text_columns(grid, language, notes)
            tables.append(text_table)
            frames, face_table, face_ids = self._face_columns(info, grid, energy.table(), face_scan, notes)
            tables.append(face_table)
        segments = pd.concat(tables, axis=1)
        fusion = self.models.fusion()
        segments = pd.concat([segments, fused_columns(segments, fusion)], axis=1)
        words = words_table(speech, speech_rows, grid)
        metadata = {
            "package": "multimodal-ser",
            "version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "file": info.path.name,
                "sha256": sha256_file(info.path),
                "duration": info.duration,
                "has_audio": info.has_audio,
                "has_video": info.has_video,
            },
            "transcript": None if transcript is None else {"file": Path(transcript).name, "sha256": sha256_file(transcript)},
            "options": dataclasses.asdict(self.options),
            "channel": channel,
            "language": language,
            "models": {**self._speech_model_ids(), **text_ids, **face_ids},
            "fusion": fusion.describe(),
            "inferred_from": {
                "audio_*": "the voice (Whisper encoder + prosody)",
                "text_*, sentiment": "the words (transcript or ASR)",
                "face_*": "the face (video frames)",
                "label, confidence, fused_*, runner_up": "fusion of the modalities named in fused_from",
                "agreement, conflict": "how far the pooled modalities back the fused label",
                "face_static, face_quality": "whether the face moved, and the weight its evidence got",
                "face_speaker_id, speaker_face_id": "face tracks whose mouth moved with the voice's energy (numbers, nobody identified)",
            },
            "notes": notes,
        }
        return Timeline(segments=segments, words=words, frames=frames, metadata=metadata)

    def _speech_segments(
        self,
        info: MediaInfo,
        known: list[TranscriptSegment] | None,
        channel: int | None,
        energy: _SpeechEnergy,
        notes: list[str],
        progress: bool,
        diarise: bool,
        keep_features: bool = False,
    ) -> tuple[list[SpeechSegment], str | None]:
        """Stream the audio once: regions → windows → encoder → ASR (or word alignment of the
        user's transcript) and the voice branch; with ``diarise``, speaker embeddings of each
        window's speech regions in a thread beside them (the decoder keeps to one core). With
        ``keep_features`` each segment's voice also keeps the features the head read.

        Returns:
            The speech segments and the recording's language as an ISO 639-1 code: the option,
            else Whisper's detection on the first speech window (for a transcript too), None
            when there is neither (no audio or no speech).
        """
        from .asr import language_code

        if not info.has_audio:
            notes.append("no audio stream: no speech analysis")
            language = language_code(self.options.language) if self.options.language else None
            return [SpeechSegment(s.start, s.end, s.speaker, s.text) for s in known or []], language
        if known is not None:
            segments = [SpeechSegment(s.start, s.end, s.speaker, s.text) for s in known]
            pieces, parents = split_long(known)
            owner = dict(zip(pieces, parents))
            source = KnownRegions(pieces)
        else:
            segments, source = [], self.models.vad()
            source.reset()
        transcriber, encoder = self.models.transcriber(), self.models.encoder()
        transcriber.new_recording()  # each recording's language is its own
        voice, collection = self._voice()
        if voice is not None:  # before any window is encoded or decoded
            voice.check_encoder(encoder.n_layers, encoder.d_model)
        voice_pieces: dict[int, list[tuple[float, dict]]] = {}
        voices = SpeakerWindows(self.models.speakers()) if diarise else None
        blocks = energy.measure(_channel_blocks(info, channel))
        language = None  # of a shared pass (prepare)
        embedding: list[Future] = []
        with (
            tqdm(total=round(info.duration, 1), unit="s", desc=info.path.name, disable=not progress, leave=False) as bar,
            _beside_main_thread("speakers") as embedder,
        ):
            for window in windows(blocks, source):
                shared = self._shared.pop((info.path, window.offset), None) if known is None and channel is None else None
                if shared is not None and not np.array_equal(shared.audio, window.audio):
                    shared = None
                encoded = shared.encoded if shared is not None else encoder.encode(window.audio, offset=window.offset)
                if voices is not None:  # beside the decoding, which keeps to one core
                    embedding.append(embedder.submit(voices.add, window.audio, window.offset, window.regions))
                if known is None:
                    if shared is not None:
                        language, heard = language or shared.language, shared.segments
                    else:
                        heard = transcriber.transcribe(encoded)
                    new = [recognised(s, window.regions) for s in heard]
                    segments += new
                    spans = [(s.start, s.end) for s in new]
                else:
                    new = [segments[owner[piece]] for piece in window.regions]
                    spans = list(window.regions)
                    whole = [i for i, (s, piece) in enumerate(zip(new, spans)) if (s.start, s.end) == piece]
                    transcriber.detect_language(encoded)
                    timed = transcriber.align(encoded, [new[i].text for i in whole], [spans[i] for i in whole])
                    for i, words in zip(whole, timed):
                        new[i].words = list(words)
                if voice is not None and spans:
                    prediction = voice.predict(encoded, spans, collection=collection)
                    for i, (segment, (start, end)) in enumerate(zip(new, spans)):
                        voice_pieces.setdefault(id(segment), []).append((end - start, voice_row(prediction, i, keep_features)))
                bar.update(round(min(window.offset + len(window.audio) / 16000, info.duration) - bar.n, 1))
        for segment in segments:
            if id(segment) in voice_pieces:
                segment.voice = weighted_voice(voice_pieces[id(segment)])
        for added in embedding:
            added.result()  # raises what the embedding raised
        if voices is not None:
            found = voices.turns(self.options.speakers)
            for segment in segments:
                segment.speaker = speaker_of(segment.start, segment.end, found)
        language = transcriber.language or language
        return segments, language_code(language) if language else None

    def _audio_columns(self, grid: pd.DataFrame, speech_rows: np.ndarray, speech: list[SpeechSegment]) -> pd.DataFrame:
        n = len(grid)
        if "audio" not in self.options.modalities:
            return absent_table("audio", n)
        probs = np.full((n, len(EMOTIONS)), np.nan)
        present = np.zeros(n, dtype=bool)
        arousal = np.full(n, np.nan)
        valence = np.full(n, np.nan)
        embeddings: list = [None] * n
        dim = None
        for segment, row in zip(speech, speech_rows):
            if segment.voice is None:
                continue
            probs[row], present[row] = segment.voice["emotions"], True
            arousal[row], valence[row] = segment.voice["arousal"], segment.voice["valence"]
            embeddings[row] = segment.voice["embedding"]
            dim = len(segment.voice["embedding"])
        table = modality_table("audio", probs, present, None if dim is None else np.stack([e if e is not None else np.zeros(dim) for e in embeddings]))
        table["audio_arousal"] = arousal
        table["audio_valence"] = valence
        return table

    def _text_columns(self, grid: pd.DataFrame, language: str | None, notes: list[str]) -> tuple[pd.DataFrame, dict]:
        if "text" not in self.options.modalities:
            table = absent_table("text", len(grid))
            table["text_absent_reason"] = pd.Series(["text not in --modalities"] * len(grid), dtype=object)
            table["sentiment"] = pd.Series([None] * len(grid), dtype=object)
            return table, {}
        from .text import text_table

        model = self.models.text()
        if language is None and grid["text"].str.strip().astype(bool).any():
            notes.append("language unknown (no audio to detect it from and no --language): the text was read as it is")
        elif language is not None and language not in model.languages:
            notes.append(f"language {language}: the text head reads {', '.join(model.languages)} only; no text emotion")
        return text_table(grid, model, language=language), {"text": {**model.model_ids, "languages": list(model.languages)}}

    @contextlib.contextmanager
    def _face_scan(self, info: MediaInfo, progress: bool) -> Iterator[Future | None]:
        """The face branch's frames (:meth:`FaceAnalyzer.scan`, then :meth:`FaceAnalyzer.finish`'s
        expression network) in a thread beside the speech branch; None without a face branch or
        video. Leaving the block early stops it."""
        if "face" not in self.options.modalities or not info.has_video:
            yield None
            return
        analyzer, stop = self.models.face(), threading.Event()
        bar = tqdm(total=round(info.duration, 1), unit="s", desc=f"faces {info.path.name}", disable=not progress, leave=False)

        def update(done: float, _total: float | None) -> None:
            bar.update(round(done - bar.n, 1))

        def frames() -> pd.DataFrame | None:
            scanned = analyzer.scan(info.path, progress=update, stop=stop)
            return None if stop.is_set() else analyzer.finish(info.path, scanned)

        with bar, _beside_main_thread("face-scan") as pool:
            try:
                yield pool.submit(frames)
            finally:
                stop.set()  # harmless when it has finished

    def _face_columns(self, info: MediaInfo, grid: pd.DataFrame, speech_energy: pd.DataFrame | None, face_scan: Future | None, notes: list[str]):
        from .face import face_segment_table

        if face_scan is None:
            if "face" in self.options.modalities:
                notes.append("no video stream: no face analysis")
            return pd.DataFrame(), absent_table("face", len(grid)), {}
        analyzer = self.models.face()
        frames = face_scan.result()
        return frames, face_segment_table(frames, grid, speech_energy=speech_energy), {"face": analyzer.model_ids}

    def _speech_model_ids(self) -> dict:
        ids = {}
        if self.models.loaded("whisper"):
            from .weights import PACKAGED_WHISPER

            name = self.options.asr_model
            packaged = PACKAGED_WHISPER.get(name)
            ids["whisper"] = {
                "name": name,
                "engine": self.options.asr_engine,
                "sha256": [sha for _, _, sha in packaged.parts] if packaged else None,
            }
        if self.models.loaded("voice") or self._reference is not None:  # the voice branch ran: the plain or the collection head
            ids["audio"] = self._voice()[0].model_ids
            if self._reference is not None:
                ids["audio"]["voice_reference"] = {
                    "file": Path(self.options.voice_reference).name, "sha256": self._reference.sha256,
                    "segments": self._reference.segments, "recordings": len(self._reference.recordings),
                }
        if self.models.loaded("speakers"):
            ids["speakers"] = self.models.speakers().id
        return ids


class _SpeechEnergy:
    """RMS energy of the analysed audio at 50 Hz, gathered while the audio streams past.

    It lets the face branch tell the speaking face (mouth movement that follows the voice).
    """

    FRAME = 320
    """samples per value: 20 ms at 16 kHz."""

    def __init__(self):
        self._values: list[np.ndarray] = []
        self._carry = np.zeros(0, dtype=np.float32)

    def measure(self, blocks):
        for block in blocks:
            samples = np.concatenate([self._carry, block])
            n = len(samples) // self.FRAME
            frames = samples[: n * self.FRAME].reshape(n, self.FRAME)
            self._values.append(np.sqrt(np.mean(frames**2, axis=1)))
            self._carry = samples[n * self.FRAME :]
            yield block

    def table(self) -> pd.DataFrame | None:
        """``time`` (s, frame centres) and ``energy``; None when no audio was measured."""
        if not self._values:
            return None
        energy = np.concatenate(self._values)
        return pd.DataFrame({"time": (np.arange(len(energy)) + 0.5) * self.FRAME / 16000, "energy": energy})


def _beside_main_thread(name: str) -> ThreadPoolExecutor:
    """One thread for work beside the main thread's encoder and decoder (speaker embeddings, the
    face pass). It runs torch on one thread and, on Linux, at the lowest CPU priority (nice 19,
    a per-thread setting there that the threads it starts, MediaPipe's too, inherit): it takes
    the cores the main thread leaves idle instead of slowing it. At equal priority MediaPipe's
    threads made the interview's encoder pass 1.1 s instead of 0.65 s."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=_yield_to_main_thread)


def _yield_to_main_thread() -> None:
    import torch

    torch.set_num_threads(1)
    if sys.platform == "linux":  # elsewhere the id of a thread is not one setpriority takes
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _channel_blocks(info: MediaInfo, channel: int | None):
    """Mono blocks: the mix of all channels, or one channel of the file."""
    if channel is None:
        return (block[0] for block in iter_audio(info.path, channels=1))
    return (block[channel] for block in iter_audio(info.path, channels=None))


def analyze(
    path: str | os.PathLike,
    options: AnalysisOptions | None = None,
    *,
    transcript: str | os.PathLike | None = None,
    channel: int | None = None,
    speaker: str | None = None,
    progress: bool = False,
) -> Timeline:
    """Analyse one recording with ``options`` (default: ``AnalysisOptions()``); see :meth:`Analyzer.analyze`.

    To analyse several recordings, make one :class:`Analyzer` and reuse it: the models load once.
    """
    analyzer = Analyzer(options or AnalysisOptions())
    return analyzer.analyze(path, transcript=transcript, channel=channel, speaker=speaker, progress=progress)
