import numpy as np
import pytest

from multimodal_ser.media import SAMPLE_RATE, load_audio
from multimodal_ser.vad import CHUNK_SECONDS, SpeechDetector, VadOptions
from multimodal_ser.windows import KnownRegions, windows


class _Scripted:
    """A stand-in VAD model that replays given probabilities (the hysteresis is what is tested)."""

    def __init__(self, probabilities):
        self.probabilities = list(probabilities)
        self.i = 0

    def reset_states(self):
        self.i = 0

    def __call__(self, chunk, rate):
        p = self.probabilities[self.i] if self.i < len(self.probabilities) else 0.0
        self.i += 1
        return p


def _regions(probabilities, **options):
    detector = SpeechDetector(VadOptions(**options), model=_Scripted(probabilities))
    samples = np.zeros(int(len(probabilities) * CHUNK_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return list(detector.regions(np.array_split(samples, 7)))


def test_hysteresis_pads_and_drops_short_blips():
    p = [0.0] * 20 + [0.9] * 40 + [0.0] * 20 + [0.9] * 2 + [0.0] * 30
    (region,) = _regions(p, pad=0.1)
    assert region[0] == pytest.approx(20 * CHUNK_SECONDS - 0.1)
    assert region[1] == pytest.approx(60 * CHUNK_SECONDS + 0.1)


def test_long_speech_is_cut_to_fit_a_window():
    p = [0.9] * int(70 / CHUNK_SECONDS)
    regions = _regions(p, max_region=28.0, pad=0.0)
    assert len(regions) == 3
    assert all(end - start <= 28.0 + 1e-6 for start, end in regions)
    assert regions[0][1] == pytest.approx(regions[1][0])


def test_rejects_thresholds_that_make_no_sense():
    with pytest.raises(ValueError, match="offset <= onset"):
        VadOptions(onset=0.3, offset=0.5)


def test_windows_hold_at_most_30_seconds_and_bounded_audio():
    regions = [(i * 4.0, i * 4.0 + 3.0) for i in range(20)] + [(500.0, 503.0)]
    audio = np.random.default_rng(0).normal(0, 0.1, 510 * SAMPLE_RATE).astype(np.float32)
    out = list(windows((audio[i : i + SAMPLE_RATE] for i in range(0, len(audio), SAMPLE_RATE)), KnownRegions(regions)))
    assert [len(w.regions) for w in out] == [7, 7, 6, 1]  # region i ends at 4i + 3 s
    for w in out:
        assert len(w.audio) <= 30 * SAMPLE_RATE
        first = int(round(w.offset * SAMPLE_RATE))
        np.testing.assert_array_equal(w.audio, audio[first : first + len(w.audio)])
    assert out[-1].offset == 500.0


@pytest.mark.models
def test_silero_finds_speech_in_real_speech(shared_data):
    clip = next((shared_data / "ravdess-speech-16k" / "Actor_01").glob("*.flac"))
    audio = load_audio(clip)
    padded = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)])
    regions = list(SpeechDetector().regions([padded]))
    assert len(regions) >= 1
    assert regions[0][0] > 1.0 and regions[-1][1] < len(padded) / SAMPLE_RATE
    silence = list(SpeechDetector().regions([np.zeros(5 * SAMPLE_RATE, np.float32)]))
    assert silence == []


@pytest.mark.models
def test_clips_read_side_by_side_get_the_extents_they_get_alone(shared_data):
    """Silero's batch rows are read on their own: the extents of clips of unequal length read
    together are those of each read alone, a silent clip and one shorter than a chunk included."""
    clips = [load_audio(path) for path in sorted((shared_data / "ravdess-speech-16k" / "Actor_02").glob("*.flac"))[:12:3]]
    clips = [clips[0][: SAMPLE_RATE], *clips[1:], np.zeros(2 * SAMPLE_RATE, np.float32), clips[0][:300]]
    detector = SpeechDetector()
    alone = [detector.extent(clip) for clip in clips]
    assert detector.extents(clips) == alone
    assert alone[-2] is None and all(extent is not None for extent in alone[1:-2])
    assert detector.extents([]) == []
