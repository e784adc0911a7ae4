"""Prosodic features on synthetic signals whose pitch and level are known."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from multimodal_ser import prosody
from multimodal_ser.media import SAMPLE_RATE, load_audio


def harmonic_tone(f0, seconds=1.5, amplitude=0.5):
    """A tone with 5 harmonics (1/k amplitudes), peak ``amplitude``; ``f0`` Hz or an array of Hz per sample."""
    n = int(seconds * SAMPLE_RATE)
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (amplitude * tone / np.abs(tone).max()).astype(np.float32)


def feature(values, name):
    return float(values[prosody.PROSODY_FEATURES.index(name)])


def test_harmonic_tone_read_back_from_a_file_has_its_f0(tmp_path):
    path = tmp_path / "tone200.wav"
    sf.write(path, harmonic_tone(200.0), SAMPLE_RATE)
    values = prosody.prosody_features(load_audio(path))
    assert feature(values, "f0_median_hz") == pytest.approx(200.0, rel=0.01)
    assert feature(values, "f0_mean_st") == pytest.approx(12.0, abs=0.2)  # 200 Hz is 12 semitones above 100 Hz
    assert feature(values, "f0_std_st") < 0.2
    assert feature(values, "voiced_fraction") > 0.9
    assert feature(values, "hnr_db") > 15
    assert feature(values, "jitter_ratio") < 0.01


def test_chirp_rises_one_octave():
    values = prosody.prosody_features(harmonic_tone(np.linspace(150, 300, int(2 * SAMPLE_RATE)), seconds=2.0))
    assert feature(values, "f0_slope_st_per_s") == pytest.approx(6.0, rel=0.15)  # 12 semitones in 2 s
    assert 8 < feature(values, "f0_range_st") < 12  # p90 - p10 of a linear glide in semitones: ~9.6


def test_level_and_loudness_follow_amplitude():
    levels = [prosody.prosody_features(harmonic_tone(180.0, amplitude=a)) for a in (0.05, 0.2, 0.8)]
    rms = [feature(v, "rms_mean_db") for v in levels]
    loudness = [feature(v, "loudness_mean_db") for v in levels]
    assert rms[0] < rms[1] < rms[2] and loudness[0] < loudness[1] < loudness[2]
    assert rms[1] - rms[0] == pytest.approx(12.04, abs=0.3)  # 4x amplitude = +12 dB


def test_full_scale_sine_reads_minus_3_db():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    values = prosody.prosody_features(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    assert feature(values, "rms_mean_db") == pytest.approx(-3.0, abs=0.2)
    assert feature(values, "loudness_mean_db") == pytest.approx(-3.0, abs=0.3)  # A-weighting is ~0 dB at 1 kHz


def test_noise_has_no_pitch_and_pitch_stats_are_nan():
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    values = prosody.prosody_features(noise)
    assert feature(values, "voiced_fraction") < 0.05
    assert np.isnan(feature(values, "f0_median_hz"))
    assert feature(values, "spectral_flatness") > feature(prosody.prosody_features(harmonic_tone(200.0)), "spectral_flatness")


def test_contours_are_on_the_encoder_grid():
    audio = harmonic_tone(220.0, seconds=1.0)
    c = prosody.contours(audio)
    assert len(c.rms_db) == 1 + len(audio) // prosody.HOP_LENGTH == 51
    assert np.allclose(np.diff(c.times), 0.02)
    assert c.f0_hz.shape == c.voiced.shape == c.periodicity.shape == c.rms_db.shape
    assert np.nanmedian(c.f0_hz) == pytest.approx(220.0, rel=0.01)


def test_shapes_short_input_and_validation():
    assert prosody.prosody_features(harmonic_tone(200.0, seconds=0.03)).shape == (len(prosody.PROSODY_FEATURES),)
    assert prosody.mfcc_stats(harmonic_tone(200.0)).shape == (len(prosody.MFCC_FEATURES),) == (40,)
    with pytest.raises(ValueError, match="mono"):
        prosody.prosody_features(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        prosody.mfcc_stats(np.zeros(0, dtype=np.float32))
