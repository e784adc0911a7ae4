"""ASR on real speech: both engines decode the one shared encoder pass."""

import re
import zlib

import pytest

from multimodal_ser.asr import (
    MAX_NEW_TOKENS,
    TOKENS_PER_SECOND,
    AsrOptions,
    CTranslate2Transcriber,
    OpenAIWhisperTranscriber,
    _split_segments,
    _tokenizer,
    max_new_tokens,
)
from multimodal_ser.encoder import FRAMES_PER_SECOND, SpeechEncoder
from multimodal_ser.errors import ModelError
from multimodal_ser.media import load_audio
from multimodal_ser.weights import PACKAGED_WHISPER, ctranslate2_dir, load_openai_whisper


@pytest.fixture(scope="module")
def whisper_base():
    return load_openai_whisper("base")


@pytest.fixture(scope="module")
def interview_window(whisper_base, shared_data):
    audio = load_audio(shared_data / "talking-heads" / "retalking-1.mp4")
    return SpeechEncoder(whisper_base).encode(audio, offset=100.0)


def _words(text):
    return re.findall(r"[a-z']+", text.lower())


EXPECTED = "my biggest weaknesses is asking for help when i need it i'd like to do better at that"


@pytest.mark.models
def test_encoder_keeps_every_layer(interview_window):
    assert FRAMES_PER_SECOND == 50
    assert interview_window.hidden_states.shape == (7, 1500, 512)
    assert interview_window.n_frames == pytest.approx(6.1 * 50, abs=2)
    assert interview_window.frames(101.0, 102.0).shape == (7, 50, 512)


@pytest.mark.parametrize("engine", ["ctranslate2", "openai-whisper"])
@pytest.mark.models
def test_both_engines_transcribe_real_speech_with_word_times(engine, whisper_base, interview_window):
    if engine == "ctranslate2":
        transcriber = CTranslate2Transcriber(ctranslate2_dir("base"), multilingual=True)
    else:
        transcriber = OpenAIWhisperTranscriber(whisper_base)
    segments = transcriber.transcribe(interview_window)
    assert transcriber.language == "en"
    words = [w for s in segments for w in s.words]
    assert " ".join(_words(" ".join(s.text for s in segments))) == EXPECTED
    assert [w for word in words for w in _words(word.word)] == EXPECTED.split()
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert 100.0 <= words[0].start < 100.3  # speech begins at once in this clip
    assert all(100.0 <= w.start <= w.end <= 106.2 for w in words)
    # "weaknesses" is said around 0.4-0.9 s into the clip
    weak = next(w for w in words if "weakness" in w.word)
    assert 100.2 < weak.start < 100.7 and 100.6 < weak.end < 101.1
    transcriber.new_recording()  # the next recording's language is detected afresh
    assert transcriber.language is None


@pytest.mark.models
def test_windows_decoded_together_each_keep_their_own_language(whisper_base, interview_window, shared_data):
    """Four windows, two English and two Turkish, detected in two halves at once: each its own language, in order."""
    turkish = shared_data / "turev-db-16k" / "Calm"
    if not turkish.is_dir():
        pytest.skip(f"TurEV-DB not found at {turkish}")
    encoder = SpeechEncoder(whisper_base)
    words = [encoder.encode(load_audio(turkish / f"1234_sk_{word}.flac")) for word in ("acik", "algi")]
    transcriber = CTranslate2Transcriber(ctranslate2_dir("base"), multilingual=True, threads=2)
    heard = transcriber.transcribe_many([interview_window, words[0], words[1], interview_window])
    assert [language for language, _ in heard] == ["en", "tr", "tr", "en"]
    assert [re.findall(r"\w+", " ".join(s.text for s in segments).lower()) for _, segments in heard[1:3]] == [["açık"], ["algı"]]
    assert " ".join(_words(" ".join(s.text for s in heard[3][1]))) == EXPECTED
    english_only = transcriber.transcribe_many([interview_window, words[0]], only=("en",))
    assert [language for language, _ in english_only] == ["en", "tr"] and english_only[1][1] == []
    assert english_only[0][1] == heard[0][1]


def test_timestamp_tokens_cut_segments():
    tokenizer = _tokenizer(True, "en")
    t = tokenizer.timestamp_begin
    hello, world = tokenizer.encode(" hello"), tokenizer.encode(" world")
    tokens = [t + 0, *hello, t + 50, t + 60, *world, t + 100, tokenizer.eot]
    assert _split_segments(tokens, tokenizer, 5.0) == [(0.0, 1.0, hello), (1.2, 2.0, world)]
    gujarati = tokenizer.encode(" <|gu|>", allowed_special="all")[-1]  # a language token written mid-text is no word
    assert _split_segments([t + 0, *hello, gujarati, *world, t + 100], tokenizer, 5.0) == [(0.0, 2.0, hello + world)]


def test_a_short_window_may_write_fewer_tokens():
    assert max_new_tokens(2.0) == 32 + 2 * TOKENS_PER_SECOND < max_new_tokens(8.0) < MAX_NEW_TOKENS == max_new_tokens(30.0)


@pytest.mark.models
def test_a_repetition_loop_on_a_short_clip_stops_at_its_token_limit(whisper_base, shared_data):
    """Whisper base loops on this 2-s Urdu talk-show clip ("आज्में आज्में ..."): the beam stops at the
    2-s window's limit, not at 448 tokens."""
    clip = shared_data / "urdu-16k" / "Angry" / "SM1_F1_A01.flac"
    if not clip.is_file():
        pytest.skip(f"URDU clip not found at {clip}")
    window = SpeechEncoder(whisper_base).encode(load_audio(clip))
    transcriber = CTranslate2Transcriber(ctranslate2_dir("base"), multilingual=True, options=AsrOptions(language="hi"), threads=2)
    text = " ".join(segment.text for segment in transcriber.transcribe(window))
    assert len(text.encode()) / len(zlib.compress(text.encode())) > 2.4, text  # a loop
    assert len(_tokenizer(True, "hi").encode(" " + text)) <= max_new_tokens(window.duration) < 100


@pytest.mark.models
def test_packaged_weights_are_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("MSER_CACHE", str(tmp_path))
    folder = ctranslate2_dir("tiny.en")
    assert (folder / "model.bin").stat().st_size > 70_000_000
    with pytest.raises(ModelError, match="no packaged Whisper model"):
        ctranslate2_dir("large-v3")
    assert set(PACKAGED_WHISPER) == {"base", "tiny.en"}


@pytest.mark.models
def test_a_corrupt_weight_file_is_refused(tmp_path, monkeypatch):
    from multimodal_ser import weights

    spec = PACKAGED_WHISPER["tiny.en"]
    fake_root = tmp_path / "pkg"
    for package, relative, _ in spec.files + spec.parts:
        copy = fake_root / package / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        data = weights._package_file(package, relative).read_bytes()
        copy.write_bytes(data[:-1] + b"x" if relative.endswith("model.bin") else data)
    monkeypatch.setattr(weights, "_package_file", lambda p, r: fake_root / p / r)
    monkeypatch.setenv("MSER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="sha256"):
        ctranslate2_dir("tiny.en")


@pytest.mark.models
def test_a_changed_cached_model_is_rebuilt_never_used(tmp_path, monkeypatch, caplog):
    import logging
    import os

    from multimodal_ser import weights
    from multimodal_ser.files import sha256_file

    monkeypatch.setenv("MSER_CACHE", str(tmp_path))
    model = ctranslate2_dir("tiny.en") / "model.bin"
    good, stat = sha256_file(model), model.stat()
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, same size
    model.write_bytes(data)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime,
    weights._checked_this_process.clear()  # a new process hashes it again
    with caplog.at_level(logging.WARNING, logger="multimodal_ser.weights"):
        assert ctranslate2_dir("tiny.en") == model.parent
    assert f"{model}: sha256 differs" in caplog.text
    assert sha256_file(model) == good
    caplog.clear()
    with open(model, "r+b") as f:  # truncated in this process: the size tells at once
        f.truncate(1000)
    with caplog.at_level(logging.WARNING, logger="multimodal_ser.weights"):
        ctranslate2_dir("tiny.en")
    assert "1000 bytes" in caplog.text and sha256_file(model) == good
