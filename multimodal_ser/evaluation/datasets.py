"""Labelled manifests of known dataset layouts (``mser manifest ravdess|turev-db|urdu|crema-d|meld|folder DIR``).

Each builder walks a dataset folder, maps the dataset's emotion names into the shared label space
(:func:`multimodal_ser.labels.to_shared_label`) and returns a manifest frame
(:func:`multimodal_ser.evaluation.manifest.manifest_frame`) with the dataset's own fields as extra
columns (RAVDESS's 8-class ``label8``, ``actor``, ``intensity``, ...).
:func:`corpus_speaker` names the speaker of a file of a corpus the voice head trains on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..errors import ManifestError
from ..labels import RAVDESS_EMOTIONS, to_shared_label
from ..media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from .manifest import manifest_frame

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS

_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_RAVDESS_MODALITIES = {"01": "audio-visual", "02": "video-only", "03": "audio-only"}
_RAVDESS_CHANNELS = {"01": "speech", "02": "song"}
_CREMA_D_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")
_CREMA_D_INTENSITY = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
_TUREV_NAME = re.compile(r"^(\d{4})_(kz|sk|mt|hl)_(.+)$")
_TUREV_CODES = {"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}
_URDU_NAME = re.compile(r"^S([MF])(\d+)_F(\d+)_([AHNS])(\d+)$")
_URDU_CODES = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
_MELD_CSV = re.compile(r"^(train|dev|test)_sent_emo\.csv$")
_MELD_CLIP_DIRS = {
    "train": ("train_splits", "train"),
    "dev": ("dev_splits_complete", "dev_splits", "dev"),
    "test": ("output_repeated_splits_test", "test_splits", "test"),
}


def _media_files(directory: Path, extensions: Iterable[str]) -> list[Path]:
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    wanted = {e.lower() for e in extensions}
    found = []
    for folder, _, names in os.walk(directory, followlinks=True):  # datasets are often symlinked in
        found += [Path(folder) / n for n in names if Path(n).suffix.lower() in wanted]
    return sorted(p for p in found if p.is_file())


def ravdess_fields(stem: str) -> dict | None:
    """Fields of a RAVDESS name ``MM-VC-EE-II-SS-RR-AA``, or None when ``stem`` is not one."""
    match = _RAVDESS_NAME.match(stem)
    if not match:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    if modality not in _RAVDESS_MODALITIES or channel not in _RAVDESS_CHANNELS or emotion not in RAVDESS_EMOTIONS:
        return None
    actor_id = int(actor)
    return {
        "label8": RAVDESS_EMOTIONS[emotion],
        "label": to_shared_label(RAVDESS_EMOTIONS[emotion]),
        "group": f"{actor_id:02d}",
        "actor": actor_id,
        "sex": "male" if actor_id % 2 else "female",
        "intensity": "strong" if intensity == "02" else "normal",
        "statement": int(statement),
        "repetition": int(repetition),
        "modality": _RAVDESS_MODALITIES[modality],
        "channel": _RAVDESS_CHANNELS[channel],
    }


def ravdess_manifest(directory: str | os.PathLike, *, include_song: bool = False) -> pd.DataFrame:
    """Manifest of the RAVDESS files under ``directory`` (searched recursively).

    Names follow ``MM-VC-EE-II-SS-RR-AA`` (modality, vocal channel, emotion, intensity, statement,
    repetition, actor). Audio-only and audio-visual files are kept; video-only files (no sound) are
    skipped, and song unless ``include_song``.

    Returns:
        Columns ``path`` (absolute), ``label`` (shared space, calm -> neutral), ``start``, ``end``
        (NaN: whole file), ``group`` (actor, ``"01"``..``"24"``), ``split`` (None), ``text`` (the
        statement), plus ``label8`` (RAVDESS's own 8 classes), ``actor``, ``sex`` (odd = male),
        ``intensity``, ``statement``, ``repetition``, ``modality``, ``channel``.

    Raises:
        ManifestError: ``directory`` is missing or holds no RAVDESS file.
    """
    directory = Path(directory)
    statements = {1: "Kids are talking by the door.", 2: "Dogs are sitting by the door."}
    rows = []
    for file in _media_files(directory, MEDIA_EXTENSIONS):
        fields = ravdess_fields(file.stem)
        if fields is None or fields["modality"] == "video-only" or (fields["channel"] == "song" and not include_song):
            continue
        rows.append({"path": str(file.resolve()), "text": statements[fields["statement"]], "corpus": "ravdess", **fields})
    if not rows:
        raise ManifestError(f"{directory}: no RAVDESS speech files (names like 03-01-05-02-01-01-12.wav) found")
    return manifest_frame(rows)


def crema_d_manifest(directory: str | os.PathLike) -> pd.DataFrame:
    """Manifest of the CREMA-D clips under ``directory``, named ``1001_DFA_ANG_XX.wav``.

    When one clip exists in several formats (``AudioWAV`` and ``VideoFlash`` copies), the audio file
    is kept, so each utterance appears once.

    Returns:
        ``path``, ``label`` (shared space), ``group`` (speaker, e.g. ``"1001"``), ``text`` (""),
        plus ``sentence`` (the 3-letter sentence code) and ``intensity`` (low/medium/high/unspecified).
    """
    directory = Path(directory)
    chosen: dict[str, Path] = {}
    for file in _media_files(directory, MEDIA_EXTENSIONS):
        if not _CREMA_D_NAME.match(file.stem):
            continue
        current = chosen.get(file.stem)
        if current is None or (file.suffix.lower() in AUDIO_EXTENSIONS and current.suffix.lower() not in AUDIO_EXTENSIONS):
            chosen[file.stem] = file
    rows = []
    for stem, file in sorted(chosen.items()):
        speaker, sentence, emotion, intensity = _CREMA_D_NAME.match(stem).groups()
        try:
            label = to_shared_label(emotion)
        except ValueError:
            log.warning("%s: unknown CREMA-D emotion code %s; skipped", file, emotion)
            continue
        rows.append(
            {
                "path": str(file.resolve()),
                "label": label,
                "group": speaker,
                "sentence": sentence,
                "intensity": _CREMA_D_INTENSITY.get(intensity, "unspecified"),
            }
        )
    if not rows:
        raise ManifestError(f"{directory}: no CREMA-D clips (names like 1001_DFA_ANG_XX.wav) found")
    return manifest_frame(rows)


def turev_manifest(directory: str | os.PathLike) -> pd.DataFrame:
    """Manifest of TurEV-DB (Turkish acted single words) under ``directory``: ``<Emotion>/<speaker>_<code>_<word>.<ext>``.

    The emotion comes from the file name's code (kz angry, sk calm, mt happy, hl sad), which must
    agree with the folder. TurEV-DB's "calm" is its only non-emotional class: ``label`` maps it to
    neutral, ``label8`` keeps it as RAVDESS's calm.

    Returns:
        ``path``, ``label`` (shared space), ``group`` (speaker id, e.g. ``"1157"``), ``text`` (the
        word), plus ``label8``, ``source_label`` (the corpus's own name), ``corpus`` ("turev-db"),
        ``sex`` (None: not published with the corpus).

    Raises:
        ManifestError: no TurEV-DB file found, or a file's code disagrees with its folder.
    """
    rows = []
    for file in _media_files(Path(directory), MEDIA_EXTENSIONS):
        match = _TUREV_NAME.match(file.stem)
        if match is None:
            continue
        speaker, code, word = match.groups()
        emotion = _TUREV_CODES[code]
        if file.parent.name.lower() != emotion:
            raise ManifestError(f"{file}: code {code!r} means {emotion}, but the file is in the folder {file.parent.name!r}")
        rows.append(
            {"path": str(file.resolve()), "label": to_shared_label(emotion), "group": speaker, "text": word,
             "label8": emotion, "source_label": emotion, "corpus": "turev-db", "sex": None}
        )
    if not rows:
        raise ManifestError(f"{directory}: no TurEV-DB files (names like Angry/1157_kz_acik.flac) found")
    return manifest_frame(rows)


def urdu_manifest(directory: str | os.PathLike) -> pd.DataFrame:
    """Manifest of the URDU corpus (natural talk-show speech) under ``directory``: ``<Emotion>/S{M,F}<n>_F<k>_<E><i>.<ext>``.

    Returns:
        ``path``, ``label`` (angry, happy, neutral or sad), ``group`` (speaker, e.g. ``"SM5"``),
        plus ``label8``, ``source_label``, ``corpus`` ("urdu") and ``sex`` (from the M/F of the name).

    Raises:
        ManifestError: no URDU file found, or a file's emotion letter disagrees with its folder.
    """
    rows = []
    for file in _media_files(Path(directory), MEDIA_EXTENSIONS):
        match = _URDU_NAME.match(file.stem)
        if match is None:
            continue
        sex, speaker, _, code, _ = match.groups()
        emotion = _URDU_CODES[code]
        if file.parent.name.lower() != emotion:
            raise ManifestError(f"{file}: letter {code!r} means {emotion}, but the file is in the folder {file.parent.name!r}")
        rows.append(
            {"path": str(file.resolve()), "label": emotion, "group": f"S{sex}{speaker}", "label8": emotion,
             "source_label": emotion, "corpus": "urdu", "sex": "male" if sex == "M" else "female"}
        )
    if not rows:
        raise ManifestError(f"{directory}: no URDU files (names like Angry/SM1_F10_A010.flac) found")
    return manifest_frame(rows)


def _meld_clip_dir(directory: Path, split: str) -> Path | None:
    for name in _MELD_CLIP_DIRS[split]:
        for candidate in (directory / name, directory / "MELD.Raw" / name):
            if candidate.is_dir():
                return candidate
    return None


def meld_manifest(directory: str | os.PathLike, *, require_media: bool = True) -> pd.DataFrame:
    """Manifest of MELD: ``{train,dev,test}_sent_emo.csv`` plus clips ``dia{D}_utt{U}.mp4`` per split.

    Clips are looked for in the official folders (``train_splits``, ``dev_splits_complete``,
    ``output_repeated_splits_test``) or a folder named after the split, beside the CSVs.

    Args:
        directory: the folder holding the CSVs.
        require_media: drop (and log) utterances whose clip is missing; False keeps them with the
            path where the clip would be, for text-only use (``read_manifest(check_files=False)``).

    Returns:
        ``path``, ``label`` (shared space: joy -> happy, ...), ``group`` (``"{split}-dia{D}"``: the
        dialogue), ``split``, ``text`` (the utterance), plus ``speaker`` and ``sentiment``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    csvs = sorted(p for p in directory.iterdir() if _MELD_CSV.match(p.name))
    if not csvs:
        raise ManifestError(f"{directory}: no MELD CSV (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv)")
    needed = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
    rows, n_missing = [], 0
    for csv in csvs:
        split = _MELD_CSV.match(csv.name).group(1)
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
        absent = [c for c in needed if c not in table.columns]
        if absent:
            raise ManifestError(f"{csv}: missing MELD column(s) {absent}; found {list(table.columns)}")
        clip_dir = _meld_clip_dir(directory, split)
        if clip_dir is None and require_media:
            log.warning("%s: no clip folder for the %s split (tried %s); its rows are skipped", directory, split, _MELD_CLIP_DIRS[split])
            n_missing += len(table)
            continue
        base = clip_dir or directory / _MELD_CLIP_DIRS[split][0]
        for i, row in enumerate(table.to_dict("records")):
            try:
                dialogue, utterance = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
                label = to_shared_label(row["Emotion"])
            except ValueError as e:
                raise ManifestError(f"{csv}, line {i + 2}: {e}") from e
            clip = base / f"dia{dialogue}_utt{utterance}.mp4"
            if require_media and not clip.is_file():
                n_missing += 1
                continue
            rows.append(
                {
                    "path": str(clip.resolve()),
                    "label": label,
                    "group": f"{split}-dia{dialogue}",
                    "split": split,
                    "text": row["Utterance"],
                    "speaker": row["Speaker"],
                    "sentiment": row["Sentiment"].strip().lower(),
                }
            )
    if n_missing:
        log.warning("%s: %d MELD utterances without a clip were skipped", directory, n_missing)
    if not rows:
        raise ManifestError(f"{directory}: no MELD utterance has its clip (dia{{D}}_utt{{U}}.mp4) in a split folder")
    return manifest_frame(rows)


def folder_manifest(directory: str | os.PathLike, *, extensions: Iterable[str] = MEDIA_EXTENSIONS) -> pd.DataFrame:
    """Manifest of a ``directory/<label>/<file>`` layout (files found recursively inside each label folder).

    The folder name is mapped to the shared label space (``joy`` -> ``happy``, ``calm`` -> ``neutral``)
    and kept in ``source_label``. ``group`` is inferred from RAVDESS (actor) or CREMA-D (speaker)
    names, else it is the file's stem (each file its own group).

    Raises:
        ManifestError: a label folder's name has no counterpart in the shared space, or no file is found.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    rows = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        try:
            label = to_shared_label(folder.name)
        except ValueError as e:
            raise ManifestError(f"{folder}: label folder name not in the shared label space ({e})") from e
        for file in _media_files(folder, extensions):
            rows.append(
                {"path": str(file.resolve()), "label": label, "group": _inferred_group(file.stem), "source_label": folder.name}
            )
    if not rows:
        raise ManifestError(f"{directory}: no media file ({sorted(extensions)}) in any label sub-folder")
    return manifest_frame(rows)


def corpus_speaker(stem: str) -> str | None:
    """``"<corpus>:<speaker>"`` for a file name of a corpus the voice head trains on (RAVDESS,
    TurEV-DB, URDU), as listed in a head's ``training.speakers``; None for any other name (and for
    RAVDESS's video-only files, which have no voice)."""
    ravdess = ravdess_fields(stem)
    if ravdess is not None:
        return None if ravdess["modality"] == "video-only" else f"ravdess:{ravdess['group']}"
    turev = _TUREV_NAME.match(stem)
    if turev is not None:
        return f"turev-db:{turev.group(1)}"
    urdu = _URDU_NAME.match(stem)
    if urdu is not None:
        return f"urdu:S{urdu.group(1)}{urdu.group(2)}"
    return None


def _inferred_group(stem: str) -> str:
    ravdess = ravdess_fields(stem)
    if ravdess is not None:
        return ravdess["group"]
    crema = _CREMA_D_NAME.match(stem)
    if crema is not None:
        return crema.group(1)
    return stem
