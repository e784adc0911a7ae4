import numpy as np
import pytest
from media_factory import tone, write_video, write_wav

from multimodal_ser.errors import MediaError
from multimodal_ser.media import SAMPLE_RATE, iter_audio, load_audio, probe


def test_resamples_any_rate_to_16k_mono(tmp_path):
    stereo = np.stack([tone(1.5, rate=44_100), 0.5 * tone(1.5, rate=44_100, frequency=440)], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo, rate=44_100)
    info = probe(path)
    assert (info.audio_channels, info.audio_sample_rate) == (2, 44_100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - 1.5) < 0.02


def test_keeps_stereo_channels_apart(tmp_path):
    left, right = tone(1.0), np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = load_audio(write_wav(tmp_path / "lr.wav", np.stack([left, right], axis=1)), channels=2)
    assert audio.shape[0] == 2
    assert np.abs(audio[0]).max() > 0.2 and np.abs(audio[1]).max() < 1e-3


def test_blocks_have_the_asked_length(tmp_path):
    path = write_wav(tmp_path / "long.wav", tone(5.3))
    blocks = list(iter_audio(path, block_seconds=2.0))
    assert [b.shape[1] for b in blocks[:-1]] == [2 * SAMPLE_RATE, 2 * SAMPLE_RATE]
    assert sum(b.shape[1] for b in blocks) == pytest.approx(5.3 * SAMPLE_RATE, abs=200)


def test_audio_of_a_video(tmp_path):
    path = write_video(tmp_path / "v.mp4", seconds=2.0, audio=tone(2.0))
    info = probe(path)
    assert info.has_video and info.has_audio
    assert abs(len(load_audio(path)) / SAMPLE_RATE - 2.0) < 0.1


def _missing(d):
    return d / "absent.wav"


def _empty(d):
    (d / "empty.wav").write_bytes(b"")
    return d / "empty.wav"


def _text_named_mp4(d):
    (d / "notes.mp4").write_text("not a video at all\n" * 50)
    return d / "notes.mp4"


def _folder(d):
    return d


@pytest.mark.parametrize(
    "make, message",
    [(_missing, "no such file"), (_empty, "empty file"), (_text_named_mp4, "not readable"), (_folder, "not a file")],
)
def test_bad_inputs_name_the_file_and_the_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(MediaError, match=message) as caught:
        probe(path)
    assert str(path) in str(caught.value)


def test_truncated_flac_is_an_error(tmp_path):
    """FLAC declares its length in its header, so a cut file is caught after decoding."""
    whole = tmp_path / "whole.flac"
    write_wav(whole, tone(4.0))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 3])
    with pytest.raises(MediaError, match="truncated") as caught:
        load_audio(cut)
    assert "cut.flac" in str(caught.value)


def test_truncated_mp4_is_an_error(tmp_path):
    """An mp4 cut before its index (moov) is unreadable as a whole."""
    whole = write_video(tmp_path / "whole.mp4", seconds=2.0, audio=tone(2.0))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        load_audio(cut)


def test_video_without_audio_has_no_audio_stream(tmp_path):
    path = write_video(tmp_path / "silent-film.mp4")
    assert not probe(path).has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(path)
