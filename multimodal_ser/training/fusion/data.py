"""The data the packaged fusions learn from: a mixed manifest from ``../shared/data`` and voice heads
that never heard the RAVDESS actor they score.

The branch predictions a fusion learns from must be held out from what trained the branches, or
the fusion learns to trust a branch that only remembers its training data. The packaged voice head
was trained on RAVDESS actors 1-20, so RAVDESS items need voice heads trained without their actor
(:func:`cross_fitted_voice_heads`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import ManifestError
from ...evaluation.datasets import folder_manifest, meld_manifest, ravdess_manifest

log = logging.getLogger(__name__)


def packaged_training_manifest(
    data_dir: str | os.PathLike, *, fer_split: str = "test", meld_split: str = "dev", ravdess_text: str = "asr"
) -> pd.DataFrame:
    """The mixed manifest the packaged fusions are trained on, from ``../shared/data``.

    - RAVDESS speech, the actors under ``ravdess-speech-16k`` (audio; with ``ravdess_text="asr"``
      the ``text`` is left blank so ASR transcribes the clip, as in use; ``"manifest"`` keeps the
      sentence the actor read, which saves a second encoder pass per clip; either way the words
      are one of two neutral sentences whatever the emotion): ``source`` ravdess.
    - MELD ``meld_split`` utterances, text only (no clips here), group = dialogue; ``dev`` is held
      out from the packaged text head's training and selection: ``source`` meld.
    - FER2013 ``fer_split`` face crops (``test`` = the PrivateTest split, which the packaged
      expression model did not train on and its calibration did not see), each image its own
      group: ``source`` fer2013.

    Raises:
        ManifestError: a dataset folder is missing.
        ValueError: ``ravdess_text`` is neither ``asr`` nor ``manifest``.
    """
    if ravdess_text not in ("asr", "manifest"):
        raise ValueError(f"ravdess_text must be 'asr' or 'manifest', not {ravdess_text!r}")
    data_dir = Path(data_dir)
    ravdess = ravdess_manifest(data_dir / "ravdess-speech-16k")
    ravdess = ravdess.assign(source="ravdess", group="ravdess-" + ravdess["group"].astype(str))
    if ravdess_text == "asr":
        ravdess = ravdess.assign(text="")
    meld = meld_manifest(data_dir / "meld", require_media=False)
    meld = meld[meld["split"] == meld_split].assign(source="meld")
    if meld.empty:
        raise ManifestError(f"{data_dir / 'meld'}: no MELD {meld_split} utterances")
    fer = folder_manifest(data_dir / "fer2013" / fer_split, extensions={".jpg", ".png"})
    fer = fer.assign(source="fer2013", group="fer2013-" + fer["group"].astype(str))
    columns = ["path", "label", "start", "end", "group", "split", "text", "source"]
    return pd.concat([part[columns] for part in (ravdess, meld, fer)], ignore_index=True)


def cross_fitted_voice_heads(
    data_dir: str | os.PathLike, *, folds: int = 5, seed: int = 0, out_dir: str | os.PathLike | None = None,
    reference: str = "none",
) -> dict[str, Path]:
    """Voice heads that never heard the RAVDESS actor they will be applied to.

    The RAVDESS actors are split into ``folds`` sex-balanced folds
    (:func:`multimodal_ser.training.audio.speaker_folds`); each fold's head is trained exactly like
    the packaged one (same recipe, same cached features, on every corpus under the data folder) but
    without that fold's actors, and saved in the packaged head's format with a copy of the packaged
    head's calibration. The fusion then learns from, and the evaluation measures, voice
    predictions for speakers the voice head did not train on.

    Args:
        data_dir: the data folder (``../shared/data``: every corpus in it is used; its RAVDESS folder
            means the same), or any other folder of RAVDESS files alone.
        folds, seed: fold assignment and training seed (fold ``k`` trains with ``seed + k``).
        out_dir: where the heads go; None uses ``weights.cache_dir()/voice-cross-fitted/<key>``
            (reused when present).
        reference: what the heads read features against (:data:`multimodal_ser.options.VOICE_REFERENCES`);
            they copy the calibration of the packaged head of that reference.

    Returns:
        ``{actor group ("01", "02", ...): head file}``.
    """
    import hashlib

    from ... import voice
    from ...files import cache_dir
    from ...heads import save_head
    from .. import audio
    from ..audio.crossval import Data

    data_dir = Path(data_dir)
    if data_dir.name == audio.CORPORA["ravdess"].folder:  # the shared data's RAVDESS folder: use its siblings too
        data_dir = data_dir.parent
    if (data_dir / audio.CORPORA["ravdess"].folder).is_dir():
        folders = audio.corpus_folders(data_dir)
    else:  # a RAVDESS folder on its own
        folders = {"ravdess": data_dir}
    corpora = list(folders)
    recipe = dataclasses.replace(audio.RECIPE, reference=reference)
    manifest = audio.training_manifest(folders)
    ravdess = manifest[manifest["corpus"] == "ravdess"]
    fold_speakers = audio.speaker_folds(ravdess, folds=folds, seed=seed)
    calibration = _packaged_voice_calibration(reference)
    key = hashlib.sha256(
        json.dumps(
            [voice.FEATURE_RECIPE, dataclasses.asdict(recipe), fold_speakers, seed, corpora, calibration,
             sorted(Path(p).name for p in manifest["path"])],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    out_dir = Path(out_dir) if out_dir is not None else cache_dir() / "voice-cross-fitted" / key
    paths = [out_dir / f"voice-head-fold{k}.safetensors" for k in range(folds)]
    mapping = {s.split(":", 1)[1]: paths[k] for k, speakers in enumerate(fold_speakers) for s in speakers}
    if all(p.is_file() for p in paths):
        log.info("cross-fitted voice heads read from %s", out_dir)
        return mapping
    data = Data.load(folders, recipe=recipe, seed=seed, tested=(audio.CLEAN.name,))
    speakers = data.manifest["speaker"].to_numpy()
    for k, (test_speakers, path) in enumerate(zip(fold_speakers, paths)):
        train = ~np.isin(speakers, test_speakers)
        log.info("voice head %d/%d: trained without %s", k + 1, folds, test_speakers)
        head = data.fit(train, recipe=recipe, seed=seed + k)
        config = audio.head_config(
            recipe,
            data=f"{', '.join(corpora)} without RAVDESS {test_speakers} (cross-fitted)",
            speakers=sorted(set(speakers[train].tolist())),
            seed=seed + k,
        )
        if calibration is not None:
            config["calibration"] = calibration
        save_head(path, head.state_dict(), config)
    return mapping


def _packaged_voice_calibration(reference: str) -> dict | None:
    """The ``calibration`` of the packaged voice head of ``reference`` (its temperature was fitted on
    held-out speakers of heads trained like the cross-fitted ones), marked as copied; None when it has none."""
    from ...heads import load_head
    from ...voice import packaged_head_path

    path = packaged_head_path(reference)
    if not path.is_file():
        return None
    calibration = load_head(path)[1].get("calibration")
    return None if not calibration else {**calibration, "copied_from": path.name}

