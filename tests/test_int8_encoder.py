"""Int8 linear layers with smoothed activations: the layer, the model surgery, and the sentence encoder run so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from multimodal_ser import int8_encoder
from multimodal_ser.errors import ModelError


def _outlier_inputs(n: int = 256, width: int = 64, seed: int = 0) -> torch.Tensor:
    """``(n, width)`` activations whose channels 3 and 40 run 30 times larger than the rest, as a
    transformer's hidden states do."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=generator)
    x[:, [3, 40]] *= 30
    return x


def _linear(width: int = 64, out: int = 32, seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(width, out)


def test_smoothing_rescues_the_channels_a_plain_int8_step_crushes():
    linear, x = _linear(), _outlier_inputs()
    exact = linear(x).detach()
    plain = int8_encoder.SmoothedInt8Linear(linear, torch.ones(64), alpha=1.0)  # s = 1: plain dynamic int8
    smoothed = int8_encoder.SmoothedInt8Linear(linear, x.abs().amax(0), alpha=0.8)

    def error(layer):
        with torch.inference_mode():
            return ((layer(x) - exact).norm() / exact.norm()).item()

    assert error(smoothed) < 0.02 and error(smoothed) < error(plain) / 3
    with torch.inference_mode():  # any leading shape, like nn.Linear
        assert smoothed(x.reshape(4, 64, 64)).shape == (4, 64, 32)


def test_activation_ranges_are_each_channels_largest_magnitude():
    model = nn.Sequential()
    model.add_module("intermediate", nn.Module())
    model.intermediate.add_module("dense", _linear())
    batches = [_outlier_inputs(seed=s) for s in range(3)]
    ranges = int8_encoder.activation_ranges(model, lambda: [model.intermediate.dense(b) for b in batches])
    assert list(ranges) == ["intermediate.dense"]
    torch.testing.assert_close(ranges["intermediate.dense"], torch.cat(batches).abs().amax(0))
    with pytest.raises(ValueError, match="calibration never reached"):
        int8_encoder.activation_ranges(model, lambda: None)
    with pytest.raises(ValueError, match="has no linear layer named"):
        int8_encoder.activation_ranges(nn.Linear(2, 2), lambda: None)


def _tiny_mpnet():
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    return MPNetModel(config).eval()


def test_quantise_replaces_exactly_the_smoothed_layers_and_keeps_the_output():
    model = _tiny_mpnet()
    ids = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(0))
    names = int8_encoder.quantised_names(model)
    assert len(names) == 2 * len(int8_encoder.QUANTISED)
    assert not any(name.endswith("output.dense") and "attention" not in name for name in names)  # the FFN's second layer stays float
    with torch.inference_mode():
        ranges = int8_encoder.activation_ranges(model, lambda: model(ids))
        exact = model(ids).last_hidden_state
    bad = {**ranges, names[0]: ranges[names[0]][:-1]}
    with pytest.raises(ValueError, match="expected"):
        int8_encoder.quantise(model, bad)
    assert int8_encoder.quantised_names(model) == names  # nothing replaced by the failed call
    with pytest.raises(ValueError, match="missing"):
        int8_encoder.quantise(model, {k: v for k, v in ranges.items() if k != names[-1]})
    int8_encoder.quantise(model, ranges)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[name], int8_encoder.SmoothedInt8Linear) for name in names)
    assert isinstance(modules["encoder.layer.0.output.dense"], nn.Linear)
    with torch.inference_mode():
        approx = model(ids).last_hidden_state
    cos = nn.functional.cosine_similarity(approx.reshape(-1, 64), exact.reshape(-1, 64))
    assert cos.min() > 0.99


@pytest.mark.models
def test_sentence_encoder_runs_int8_from_its_calibration():
    from multimodal_ser.sentence_encoder import MPNET_SHA256, SentenceEncoder, encoder_for

    calibration = ["I can't believe you did that!", "Okay, see you tomorrow then.", "This is the best day of my life.",
                   "Why would anyone leave the door open?", "I'm so sorry for your loss.", "Get out of my apartment!"]
    texts = ["I am so happy today!", "The train leaves at eight.", "I am furious with you!", "Oh no, not again..."]
    exact = SentenceEncoder(None, sha256=MPNET_SHA256, layers=4)
    reference = exact.encode(texts)
    ranges = exact.int8_calibration(calibration)
    assert sorted(ranges) == sorted(int8_encoder.quantised_names(exact.model))
    exact.quantise(ranges)
    assert exact.id.endswith("first 4 of 12 layers, int8") and exact.int8_ranges.keys() == ranges.keys()
    quantised = exact.encode(texts)
    assert np.min(np.sum(quantised * reference, axis=1)) > 0.98  # unit vectors: the cosine
    with pytest.raises(ModelError, match="already runs in int8"):
        exact.quantise(ranges)
    with pytest.raises(ModelError, match="calibrate the float32 encoder"):
        exact.int8_calibration(calibration)

    loaded = encoder_for({"sha256": MPNET_SHA256, "layers": 4, "int8": {"alpha": int8_encoder.ALPHA}}, int8_ranges=ranges)
    np.testing.assert_allclose(loaded.encode(texts), quantised, atol=1e-5)  # a head file's ranges rebuild the same encoder
    assert loaded.fingerprint == exact.fingerprint != SentenceEncoder(None, sha256=MPNET_SHA256, layers=4).fingerprint
    other_alpha = encoder_for({"sha256": MPNET_SHA256, "layers": 4, "int8": {"alpha": 0.5}}, int8_ranges=ranges)
    assert other_alpha.fingerprint != loaded.fingerprint  # cached embeddings never mix the two
    with pytest.raises(ModelError, match="do not match the model's int8 layers"):
        SentenceEncoder(None, sha256=MPNET_SHA256, layers=2, int8_ranges=ranges)  # ranges of layers it no longer has
