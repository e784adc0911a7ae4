"""Windows are brought to one speech level before the encoder: the recording's gain must not matter."""

import numpy as np

from multimodal_ser.loudness import PEAK_LIMIT, TARGET_DBFS, active_level_dbfs, normalise_loudness
from multimodal_ser.media import SAMPLE_RATE


def _speech_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    bursts = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)  # on/off like syllables and pauses
    return (bursts * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(len(t)))).astype(np.float32)


def test_the_same_speech_at_any_gain_comes_out_the_same():
    speech = _speech_like()
    quiet, loud = normalise_loudness(0.003 * speech), normalise_loudness(0.2 * speech)
    np.testing.assert_allclose(quiet, loud, rtol=1e-4, atol=1e-6)
    assert abs(active_level_dbfs(quiet) - TARGET_DBFS) < 0.01


def test_pauses_do_not_count_towards_the_level():
    speech = _speech_like()
    with_silence = np.concatenate([speech, np.zeros(5 * SAMPLE_RATE, dtype=np.float32)])
    assert abs(active_level_dbfs(with_silence) - active_level_dbfs(speech)) < 0.5


def test_differences_inside_a_window_are_kept():
    speech = _speech_like()
    window = np.concatenate([0.05 * speech, 0.5 * speech])  # a raised voice after a calm one
    out = normalise_loudness(window)
    half = len(speech)
    ratio = np.sqrt(np.mean(out[half:] ** 2) / np.mean(out[:half] ** 2))
    assert abs(ratio - 10.0) < 0.01


def test_silence_is_left_alone_and_nothing_clips():
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    np.testing.assert_array_equal(normalise_loudness(silence), silence)
    assert active_level_dbfs(silence) == -np.inf
    clicks = np.zeros(SAMPLE_RATE, dtype=np.float32)
    clicks[::4000] = 0.001  # very peaky: the level gain would push the peaks far past full scale
    assert np.max(np.abs(normalise_loudness(clicks))) <= PEAK_LIMIT + 1e-6
    assert normalise_loudness(np.zeros(0, dtype=np.float32)).shape == (0,)
