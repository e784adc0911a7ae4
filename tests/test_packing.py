"""Short clips packed into shared encoder windows: the layout, the mapping of results back to each
item in ``mser evaluate``, and (slow) the agreement of packed and solo voice predictions on RAVDESS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from multimodal_ser.asr import AsrSegment, Word
from multimodal_ser.encoder import WINDOW_FRAMES, WINDOW_SAMPLES, EncodedWindow
from multimodal_ser.evaluation.cache import PredictionCache
from multimodal_ser.evaluation.items import ItemRunner
from multimodal_ser.media import SAMPLE_RATE
from multimodal_ser.packing import GAP_SAMPLES, pack


def test_pack_puts_every_piece_whole_in_one_window_in_order():
    lengths = np.random.default_rng(0).integers(SAMPLE_RATE // 2, 9 * SAMPLE_RATE, size=200)
    windows = pack(lengths)
    assert [k for window in windows for k, _ in window] == list(range(len(lengths)))
    for window, following in zip(windows, windows[1:] + [None]):
        ends = [at + lengths[k] for k, at in window]
        assert window[0][1] == 0 and max(ends) <= WINDOW_SAMPLES
        assert all(at >= end + GAP_SAMPLES for (_, at), end in zip(window[1:], ends))
        if following is not None:  # a window is closed only when the next piece does not fit it
            assert ends[-1] + GAP_SAMPLES + lengths[following[0][0]] > WINDOW_SAMPLES


def test_pack_refuses_a_piece_longer_than_a_window():
    with pytest.raises(ValueError, match="piece 1"):
        pack([SAMPLE_RATE, WINDOW_SAMPLES + 1])


def test_a_compact_output_is_spread_to_any_memory_length_keeping_every_row_in_order():
    """A window encoded with others has 100 rows of its own frames and 280 rows of 5 padding frames each."""
    counts = np.concatenate([np.ones(100, np.int64), np.full(280, 5)])
    output = torch.arange(len(counts), dtype=torch.float32)[:, None].expand(-1, 3)
    window = EncodedWindow(0.0, 2.0, np.zeros(32000, np.float32), output, output[None, :100], output_counts=counts)
    assert window.decoder_input(380) is output
    torch.testing.assert_close(window.decoder_input(WINDOW_FRAMES), output.repeat_interleave(torch.from_numpy(counts), dim=0))
    for length in (381, 500, 1499):
        rows = window.decoder_input(length)[:, 0].long()
        assert len(rows) == length and torch.equal(rows.unique_consecutive(), torch.arange(380))  # every row, in order
        repeats = torch.bincount(rows, minlength=380)
        assert (repeats[:100] == 1).all() and repeats.max() <= 5  # the clip's frames once, none past its count
    with pytest.raises(ValueError, match="379 rows"):
        window.decoder_input(379)


class _Encoder:
    """Every layer's state at a frame is the RMS of the window's audio over that frame."""

    normalise = False  # keeps each clip's level, which identifies it

    def __init__(self):
        self.windows: list[float] = []
        """seconds of each window encoded whole (for the ASR)."""
        self.alone: list[float] = []
        """seconds of each clip encoded alone (for the voice)."""

    @staticmethod
    def _hidden(audio):
        padded = np.zeros(WINDOW_SAMPLES, np.float32)
        padded[: len(audio)] = audio
        rms = torch.from_numpy(np.sqrt(np.mean(padded.reshape(1500, 320) ** 2, axis=1)))
        return rms[None, :, None].expand(2, 1500, 2).clone()

    def encode(self, audio, *, offset=0.0, normalise=None):
        self.windows.append(len(audio) / SAMPLE_RATE)
        hidden = self._hidden(audio)
        return EncodedWindow(offset, len(audio) / SAMPLE_RATE, np.asarray(audio, np.float32), hidden[-1], hidden)

    def encode_alone(self, clips):
        self.alone += [len(audio) / SAMPLE_RATE for audio in clips]
        return [EncodedWindow(0.0, len(a) / SAMPLE_RATE, a, self._hidden(a)[-1], self._hidden(a)[:, : -(-len(a) // 320)]) for a in clips]


class _Transcriber:
    """One word per stretch of sound, at its place: the stretch's level in hundredths. Sound above
    0.105 is heard as Urdu, the rest as English."""

    def __init__(self):
        self.batches: list[int] = []
        self.decoded = 0
        self.language = None

    def new_recording(self):
        self.language = None

    def detect_language(self, window):
        self.language = self.language or ("ur" if np.abs(window.audio).max() > 0.105 else "en")
        return self.language

    def transcribe(self, window):
        self.detect_language(window)
        self.decoded += 1
        loud = np.abs(window.audio) > 0
        edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
        words = [
            Word(f" {round(float(window.audio[a]) * 100)}", window.offset + a / SAMPLE_RATE, window.offset + b / SAMPLE_RATE, 1.0)
            for a, b in zip(edges[::2], edges[1::2])
        ]
        return [AsrSegment(words[0].start, words[-1].end, "".join(w.word for w in words), tuple(words), 0.0, 0.0)] if words else []

    def transcribe_many(self, windows, only=None):
        self.batches.append(len(windows))
        results = []
        for window in windows:
            self.new_recording()
            language = self.detect_language(window)
            results.append((language, self.transcribe(window) if only is None or language in only else []))
        return results


class _Vad:
    def extent(self, samples):
        loud = np.flatnonzero(np.abs(samples) > 0)
        return loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE

    def extents(self, clips):
        return [self.extent(samples) for samples in clips]


class _Models:
    language = "en"

    def __init__(self):
        self._encoder, self._transcriber, self._vad = _Encoder(), _Transcriber(), _Vad()

    def encoder(self):
        return self._encoder

    def transcriber(self):
        return self._transcriber

    def vad(self):
        return self._vad


def _level_clips(tmp_path) -> tuple[pd.DataFrame, np.ndarray]:
    """15 clips, each a steady level between silences (item 7 too long to pack), and their levels."""
    rng = np.random.default_rng(1)
    levels = np.arange(1, 16) / 100
    rows = []
    for i, level in enumerate(levels):
        seconds = 10.0 if i == 7 else int(rng.integers(90, 200)) * 0.02  # whole frames, speech over 0.5 s; item 7 is too long to pack
        audio = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
        audio[int(0.6 * SAMPLE_RATE) : -int(0.5 * SAMPLE_RATE)] = level  # speech: a steady level between silences
        sf.write(tmp_path / f"clip{i}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
        rows.append({"path": str(tmp_path / f"clip{i}.wav"), "start": np.nan, "end": np.nan, "group": "a", "text": None})
    return pd.DataFrame(rows), levels


def test_packed_items_get_their_own_features_and_words_back(tmp_path):
    table, levels = _level_clips(tmp_path)
    models = _Models()
    ids = {"audio": {"encoder": "fake", "features": {}}, "asr": {}}
    cache = PredictionCache(tmp_path / "cache")
    runner = ItemRunner(models, cache, ids, ("audio", "text"), images_are_face_crops=False, pack=True)
    runner.prepare(list(table.iterrows()))
    encoder = models.encoder()
    assert encoder.windows == []  # the 14 short items are encoded together, whole, for the voice and the ASR
    assert models.transcriber().batches == [14]
    assert encoder.alone == pytest.approx([len(sf.read(table.path[i])[0]) / SAMPLE_RATE for i in range(15) if i != 7])
    for index in np.random.default_rng(2).permutation(len(table)):
        item = runner.run(table.iloc[index], int(index))
        assert item.voice.features[0, 0] == pytest.approx(levels[index], abs=1e-6)
        assert item.text == str(round(levels[index] * 100)) and item.text_language == ("ur" if levels[index] > 0.105 else "en")
    assert encoder.windows == [pytest.approx(10.0)]  # item 7, too long, had a window of its own
    again = _Models()  # a second run reads every item's features, words and language from the cache
    runner = ItemRunner(again, cache, ids, ("audio", "text"), images_are_face_crops=False, pack=True)
    runner.prepare(list(table.iterrows()))
    for index in range(len(table)):
        item = runner.run(table.iloc[index], index)
        assert item.text == str(round(levels[index] * 100)) and item.text_language == ("ur" if levels[index] > 0.105 else "en")
    assert again.encoder().windows == again.encoder().alone == []


@pytest.mark.slow
@pytest.mark.models
def test_packed_and_solo_predictions_of_ravdess_clips_agree(shared_data):
    """Voice and ASR of clips encoded together are those of each clip alone, within the noise
    (benchmarks/evaluate_packing.py on 60 clips: mean |dp| 0.005 against 0.009 for a 10-ms shift)."""
    from multimodal_ser.evaluation import predict_manifest
    from multimodal_ser.evaluation.datasets import ravdess_manifest
    from multimodal_ser.labels import EMOTIONS

    manifest = ravdess_manifest(shared_data / "ravdess-speech-16k").sample(n=10, random_state=0).sort_values("path")
    manifest = manifest.assign(text=None)  # the ASR transcribes them
    columns = [f"audio_{label}" for label in EMOTIONS]
    solo, packed = (
        predict_manifest(manifest, modalities=("audio", "text"), use_cache=False, pack=pack, progress=False).table
        for pack in (False, True)
    )
    p_solo, p_packed = solo[columns].to_numpy(), packed[columns].to_numpy()
    assert np.abs(p_solo - p_packed).mean() < 0.015
    assert np.mean(p_solo.argmax(1) == p_packed.argmax(1)) >= 0.9
    assert (solo["text"] == packed["text"]).sum() >= 8, list(zip(solo["text"], packed["text"]))


@pytest.mark.parametrize("pack", [True, False])
def test_only_the_words_of_items_in_a_language_the_text_head_reads_are_decoded(tmp_path, pack):
    """Packed or alone, an item heard in another language keeps its language and gets no words."""
    table, levels = _level_clips(tmp_path)
    models = _Models()
    ids = {"audio": {"encoder": "fake", "features": {}}, "asr": {}}
    runner = ItemRunner(models, PredictionCache(None), ids, ("audio", "text"), images_are_face_crops=False, pack=pack, asr_languages=("en",))
    runner.prepare(list(table.iterrows()))
    items = [runner.run(table.iloc[index], index) for index in range(len(table))]
    english = levels <= 0.105
    assert [item.text_language for item in items] == ["en" if e else "ur" for e in english]
    assert [item.text for item in items] == [str(round(level * 100)) if e else "" for level, e in zip(levels, english)]
    assert models.transcriber().decoded == english.sum()
