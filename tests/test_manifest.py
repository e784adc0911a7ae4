"""The labelled-manifest reader and the dataset-layout builders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from multimodal_ser.errors import ManifestError
from multimodal_ser.evaluation.datasets import (
    corpus_speaker,
    crema_d_manifest,
    folder_manifest,
    meld_manifest,
    ravdess_manifest,
    turev_manifest,
    urdu_manifest,
)
from multimodal_ser.evaluation.manifest import read_manifest


def touch_wav(path, seconds=0.1):
    """A small silent file at ``path`` (a real WAV for .wav; builders and the reader never decode others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".wav":
        sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
    else:
        path.write_bytes(b"\0" * 64)
    return path


def write_manifest(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- reader ----------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    clip = touch_wav(tmp_path / "clips" / "a.wav")
    manifest = write_manifest(
        tmp_path / "lists" / "m.csv",
        f"path,label,start,end,group,speaker_age\n../clips/a.wav,happy,0.5,1.5,s1,34\n{clip},sad,,,,\n",
    )
    table = read_manifest(manifest)
    assert list(table["path"]) == [str(clip.resolve())] * 2
    assert table.loc[0, "start"] == 0.5 and table.loc[0, "end"] == 1.5
    assert np.isnan(table.loc[1, "start"])
    assert table.loc[0, "group"] == "s1" and table.loc[1, "group"] is None
    assert list(table.columns[:7]) == ["path", "label", "start", "end", "group", "split", "text"]
    assert table.loc[0, "speaker_age"] == "34"  # extra columns are kept


def test_missing_required_column_is_named(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", "path,emotion\na.wav,happy\n")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['label'\].*found \['path', 'emotion'\]"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("missing.wav,happy,,", "line 3: file not found: 'missing.wav'"),
        ("a.wav,,,", "line 3: empty label"),
        ("a.wav,happy,soon,", "line 3: start must be a number of seconds, not 'soon'"),
        ("a.wav,happy,2.0,1.0", r"line 3: end \(1.0\) must be after start \(2.0\)"),
        ("a.wav,happy,-1,", "line 3: start must be a finite number"),
        ("a.wav,joy,,", "line 3: label 'joy' is not one of"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    touch_wav(tmp_path / "a.wav")
    manifest = write_manifest(tmp_path / "m.csv", f"path,label,start,end\na.wav,sad,,\n{row}\n")
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(manifest, labels=["neutral", "happy", "sad"])
    assert str(manifest) in str(info.value)


def test_missing_manifest_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(write_manifest(tmp_path / "m.csv", "path,label\n"))


# --- builders on real file names -------------------------------------------------------------------


def test_ravdess_builder(tmp_path):
    for name in (
        "Actor_01/03-01-02-01-01-01-01.wav",  # audio-only speech, calm, actor 1
        "Actor_01/03-01-05-02-02-01-01.wav",  # angry, strong
        "Actor_02/01-01-01-01-01-02-02.mp4",  # audio-visual speech, neutral, actor 2
        "Actor_02/02-01-03-01-01-01-02.mp4",  # video-only: no sound, skipped
        "Actor_02/03-02-03-01-01-01-02.wav",  # song: skipped by default
        "Actor_02/notes.wav",  # not a RAVDESS name
    ):
        touch_wav(tmp_path / name)
    table = ravdess_manifest(tmp_path)
    assert len(table) == 3
    calm = table[table["path"].str.endswith("03-01-02-01-01-01-01.wav")].iloc[0]
    assert (calm["label"], calm["label8"], calm["group"], calm["sex"], calm["intensity"]) == (
        "neutral", "calm", "01", "male", "normal"
    )
    av = table[table["modality"] == "audio-visual"].iloc[0]
    assert (av["label"], av["group"], av["sex"]) == ("neutral", "02", "female")
    assert len(ravdess_manifest(tmp_path, include_song=True)) == 4
    other = touch_wav(tmp_path / "elsewhere" / "a.wav").parent
    with pytest.raises(ManifestError, match="no RAVDESS"):
        ravdess_manifest(other)
    with pytest.raises(ManifestError, match="not a directory"):
        ravdess_manifest(tmp_path / "absent")


def test_crema_d_builder_keeps_one_copy_per_clip(tmp_path):
    touch_wav(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    touch_wav(tmp_path / "VideoFlash" / "1001_DFA_ANG_XX.flv")
    touch_wav(tmp_path / "AudioWAV" / "1091_IEO_HAP_HI.wav")
    table = crema_d_manifest(tmp_path)
    assert len(table) == 2
    first = table[table["group"] == "1001"].iloc[0]
    assert first["label"] == "angry" and first["path"].endswith(".wav") and first["intensity"] == "unspecified"
    assert table[table["group"] == "1091"].iloc[0]["label"] == "happy"


def test_meld_builder(tmp_path):
    columns = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    write_manifest(
        tmp_path / "train_sent_emo.csv",
        columns
        + '1,"Oh my God, he\'s lost it.",Phoebe,joy,positive,0,0,1,1,"00:14:38,127","00:14:40,000"\n'
        + "2,What?,Monica,surprise,negative,0,1,1,1,x,y\n"
        + "3,No clip for me.,Ross,neutral,neutral,1,0,1,1,x,y\n",
    )
    touch_wav(tmp_path / "train_splits" / "dia0_utt0.mp4")
    touch_wav(tmp_path / "train_splits" / "dia0_utt1.mp4")
    table = meld_manifest(tmp_path)
    assert list(table["label"]) == ["happy", "surprised"]
    assert list(table["group"]) == ["train-dia0", "train-dia0"]
    assert table.iloc[0]["text"] == "Oh my God, he's lost it." and table.iloc[0]["speaker"] == "Phoebe"
    assert set(table["split"]) == {"train"}
    assert len(meld_manifest(tmp_path, require_media=False)) == 3


def test_folder_builder(tmp_path):
    touch_wav(tmp_path / "joy" / "clip1.wav")
    touch_wav(tmp_path / "calm" / "03-01-02-01-01-01-07.wav")
    touch_wav(tmp_path / "angry" / "1001_DFA_ANG_XX.wav")
    (tmp_path / "angry" / "readme.txt").write_text("not media")
    table = folder_manifest(tmp_path)
    by_source = table.set_index("source_label")
    assert by_source.loc["joy", "label"] == "happy" and by_source.loc["joy", "group"] == "clip1"
    assert by_source.loc["calm", "label"] == "neutral" and by_source.loc["calm", "group"] == "07"
    assert by_source.loc["angry", "group"] == "1001"
    touch_wav(tmp_path / "love" / "x.wav")
    with pytest.raises(ManifestError, match="love"):
        folder_manifest(tmp_path)


def test_builder_output_round_trips_through_the_reader(tmp_path):
    touch_wav(tmp_path / "Actor_03" / "03-01-08-02-02-02-03.wav")
    csv = tmp_path / "ravdess.csv"
    ravdess_manifest(tmp_path).to_csv(csv, index=False)
    table = read_manifest(csv)
    assert table.iloc[0]["label"] == "surprised" and table.iloc[0]["label8"] == "surprised"


def test_real_ravdess_folder(shared_data):
    folder = shared_data / "ravdess-speech-16k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    table = ravdess_manifest(folder)
    assert len(table) == 1200
    assert table["group"].nunique() == 20
    assert (table["label8"] == "calm").sum() == 160
    assert (table.loc[table["label8"] == "calm", "label"] == "neutral").all()
    assert (table["label"] == "neutral").sum() == 240
    assert set(table["sex"]) == {"male", "female"}
    assert isinstance(table, pd.DataFrame) and table["path"].is_unique


def test_turev_builder_reads_speaker_and_emotion_from_the_name(tmp_path):
    touch_wav(tmp_path / "Calm" / "1157_sk_acik.flac")
    touch_wav(tmp_path / "Angry" / "6783_kz_beste.flac")
    touch_wav(tmp_path / "Angry" / "notes.flac")  # not a TurEV-DB name: ignored
    table = turev_manifest(tmp_path)
    assert list(table["group"]) == ["6783", "1157"]
    assert list(table["label"]) == ["angry", "neutral"] and list(table["label8"]) == ["angry", "calm"]
    assert list(table["text"]) == ["beste", "acik"] and set(table["corpus"]) == {"turev-db"}
    touch_wav(tmp_path / "Happy" / "1157_hl_yol.flac")  # hl is sad, but the folder says happy
    with pytest.raises(ManifestError, match="1157_hl_yol.flac.*sad.*Happy"):
        turev_manifest(tmp_path)


def test_urdu_builder_reads_speaker_sex_and_emotion(tmp_path):
    touch_wav(tmp_path / "Neutral" / "SF3_F5_N05.flac")
    touch_wav(tmp_path / "Sad" / "SM24_F12_S012.flac")
    table = urdu_manifest(tmp_path)
    assert list(table["group"]) == ["SF3", "SM24"] and list(table["sex"]) == ["female", "male"]
    assert list(table["label"]) == ["neutral", "sad"] and list(table["label8"]) == ["neutral", "sad"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no URDU files"):
        urdu_manifest(tmp_path / "empty")


@pytest.mark.parametrize("folder, build, n, speakers", [("turev-db-16k", turev_manifest, 1735, 6), ("urdu-16k", urdu_manifest, 294, 22)])
def test_real_turev_and_urdu_folders(shared_data, folder, build, n, speakers):
    if not (shared_data / folder).is_dir():
        pytest.skip(f"{shared_data / folder} not found")
    table = build(shared_data / folder)
    assert len(table) == n and table["group"].nunique() == speakers and table["path"].is_unique
    assert set(table["label"]) == ({"angry", "happy", "neutral", "sad"})


@pytest.mark.parametrize("stem, speaker", [
    ("03-01-05-02-01-01-12", "ravdess:12"), ("02-01-05-02-01-01-12", None), ("1157_kz_acik", "turev-db:1157"),
    ("SM24_F12_S012", "urdu:SM24"), ("1001_DFA_ANG_XX", None), ("interview", None),
])
def test_corpus_speaker_names_the_speakers_a_voice_head_lists(stem, speaker):
    assert corpus_speaker(stem) == speaker
