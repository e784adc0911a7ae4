"""A residual expression network, written as a Keras 2 functional config so that
:class:`~multimodal_ser.face.keras_port.KerasGraphNet` runs it and a face head stores it like the
mini-Xception: :func:`~multimodal_ser.face.expression.save_face_head` needs no new format and
:class:`~multimodal_ser.face.ExpressionModel` loads it unchanged.

Layout (He et al. 2016, the CIFAR-style variant for small images): a 3x3 stem convolution at the
input's resolution, then ``len(blocks)`` stages of basic blocks (two 3x3 convolutions, batch
normalisation, ReLU, an identity or 1x1 projection shortcut), the width doubling and the
resolution halving (stride 2) at each stage after the first; then a 1x1 classifier convolution,
a global average and a softmax. The face embedding is the input of that classifier, averaged over
space: ``width * 2 ** (len(blocks) - 1)`` floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .keras_port import KerasGraphNet


class _GraphBuilder:
    """Accumulates Keras functional layer entries and their weights (Keras layout)."""

    def __init__(self, rng: np.random.Generator):
        self.layers: list[dict] = []
        self.weights: dict[str, dict[str, np.ndarray]] = {}
        self.rng = rng

    def add(self, kind: str, name: str, config: dict, inputs: Sequence[str]) -> str:
        self.layers.append({
            "class_name": kind,
            "name": name,
            "config": {"name": name, **config},
            "inbound_nodes": [[[source, 0, 0, {}] for source in inputs]] if inputs else [],
        })
        return name

    def conv(self, name: str, source: str, n_in: int, n_out: int, kernel: int, stride: int = 1, bias: bool = False) -> str:
        std = np.sqrt(2.0 / (kernel * kernel * n_in))  # He-normal, fan-in
        self.weights[name] = {"kernel": (self.rng.standard_normal((kernel, kernel, n_in, n_out)) * std).astype(np.float32)}
        if bias:
            self.weights[name]["bias"] = np.zeros(n_out, np.float32)
        config = {"filters": n_out, "kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": "same",
                  "dilation_rate": [1, 1], "activation": "linear", "use_bias": bias}
        return self.add("Conv2D", name, config, [source])

    def norm(self, name: str, source: str, channels: int, gamma: float = 1.0) -> str:
        self.weights[name] = {
            "gamma": np.full(channels, gamma, np.float32),
            "beta": np.zeros(channels, np.float32),
            "moving_mean": np.zeros(channels, np.float32),
            "moving_variance": np.ones(channels, np.float32),
        }
        return self.add("BatchNormalization", name, {"axis": -1, "epsilon": 1e-3}, [source])

    def relu(self, name: str, source: str) -> str:
        return self.add("Activation", name, {"activation": "relu"}, [source])


def resnet_config(
    *, input_size: int = 48, width: int = 16, blocks: Sequence[int] = (2, 2, 2, 2), n_classes: int = 7, seed: int = 0
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """``(keras model_config, {layer: {weight: array}})`` of a freshly initialised residual network.

    Args:
        input_size: side of the square grayscale input (pixels).
        width: channels of the first stage; each later stage doubles them.
        blocks: basic blocks per stage; (2, 2, 2, 2) is ResNet-18's layout.
        n_classes: softmax outputs.
        seed: the He-normal initial weights. Each block's last batch normalisation starts at zero
            scale, so every block starts as the identity (Goyal et al. 2017).
    """
    graph = _GraphBuilder(np.random.default_rng(seed))
    x = graph.add("InputLayer", "input", {"batch_input_shape": [None, input_size, input_size, 1], "dtype": "float32"}, [])
    x = graph.relu("stem_relu", graph.norm("stem_bn", graph.conv("stem_conv", x, 1, width, 3), width))
    channels = width
    for stage, n_blocks in enumerate(blocks):
        out_channels = width * 2**stage
        for block in range(n_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage + 1}b{block + 1}"
            y = graph.conv(f"{name}_conv1", x, channels, out_channels, 3, stride)
            y = graph.relu(f"{name}_relu1", graph.norm(f"{name}_bn1", y, out_channels))
            y = graph.norm(f"{name}_bn2", graph.conv(f"{name}_conv2", y, out_channels, out_channels, 3), out_channels, gamma=0.0)
            shortcut = x
            if stride != 1 or channels != out_channels:
                shortcut = graph.norm(f"{name}_proj_bn", graph.conv(f"{name}_proj", x, channels, out_channels, 1, stride), out_channels)
            x = graph.relu(f"{name}_relu2", graph.add("Add", f"{name}_add", {}, [y, shortcut]))
            channels = out_channels
    x = graph.conv("classifier", x, channels, n_classes, 1, bias=True)
    x = graph.add("GlobalAveragePooling2D", "pool", {"data_format": "channels_last"}, [x])
    x = graph.add("Activation", "predictions", {"activation": "softmax"}, [x])
    config = {
        "class_name": "Model",
        "config": {"name": f"resnet_w{width}_" + "".join(map(str, blocks)), "layers": graph.layers,
                   "input_layers": [["input", 0, 0]], "output_layers": [[x, 0, 0]]},
    }
    return config, graph.weights


def resnet(**kwargs) -> KerasGraphNet:
    """A freshly initialised :func:`resnet_config` network, ready to train."""
    return KerasGraphNet(*resnet_config(**kwargs))
