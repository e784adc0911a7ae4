"""Conversation metrics computed from a segments table: turns, talk time, overlaps, interruptions,
silences, per-speaker emotion profiles and moments of strong change; and the summary table they fill.

Every function reads only ``start``, ``end`` (seconds), ``speaker`` and, where it says so, the fused
and text columns of ``segments.parquet``, whoever filled the ``speaker`` column (a stereo channel, a
transcript, or diarisation). Rows without a speaker or without speech (``speech`` False) are ignored.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from multimodal_ser.labels import EMOTIONS

NEGATIVE = ("angry", "sad", "fearful", "disgust")
"""Fused labels counted as a negative state (with negative sentiment) for escalations."""

SUMMARY_COLUMNS = ("section", "subject", "metric", "value", "start", "end", "note", "inferred_from")
"""Columns of ``summary.parquet``: one metric per row; ``value`` a float (seconds, share or score),
``start``/``end`` (s) where the metric is a moment or a stretch (else NaN), ``note`` a label or
words, ``inferred_from`` the source (``timing``, ``words``, ``voice+words+face (fused)``, ...)."""

TIMING = "timing (segment start/end and speaker)"
FUSED = "fused label (the modalities in fused_from)"
WORDS = "words (text sentiment)"


def speech_segments(segments: pd.DataFrame) -> pd.DataFrame:
    """The rows with speech and a speaker, sorted by start, index reset."""
    keep = segments["speaker"].notna()
    if "speech" in segments:
        keep &= segments["speech"].fillna(False).astype(bool)
    return segments[keep].sort_values("start", kind="stable").reset_index(drop=True)


def talk_time(segments: pd.DataFrame) -> pd.DataFrame:
    """Seconds of speech per speaker and their share of all speakers' speech seconds.

    Returns:
        index speaker, columns ``seconds`` and ``share`` (shares sum to 1; overlapping speech
        counts for each speaker).
    """
    rows = speech_segments(segments)
    seconds = (rows["end"] - rows["start"]).groupby(rows["speaker"]).sum()
    total = seconds.sum()
    return pd.DataFrame({"seconds": seconds, "share": seconds / total if total > 0 else np.nan})


def _overlapping_pairs(rows: pd.DataFrame):
    """``(i, j)`` row positions of segments of different speakers where ``j`` starts during ``i``."""
    starts, ends, speakers = rows["start"].to_numpy(float), rows["end"].to_numpy(float), rows["speaker"].to_numpy(object)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if starts[j] >= ends[i]:
                break
            if speakers[i] != speakers[j]:
                yield i, j


def overlaps(segments: pd.DataFrame) -> pd.DataFrame:
    """Stretches where two speakers talk at once.

    Returns:
        one row per pair of overlapping segments of different speakers: ``start``, ``end`` (s),
        ``first`` (the speaker already talking), ``second`` (the one who started later), ``seconds``.
    """
    rows = speech_segments(segments)
    found = []
    for i, j in _overlapping_pairs(rows):
        start, end = rows.at[j, "start"], min(rows.at[i, "end"], rows.at[j, "end"])
        found.append({"start": start, "end": end, "first": rows.at[i, "speaker"], "second": rows.at[j, "speaker"], "seconds": end - start})
    return pd.DataFrame(found, columns=["start", "end", "first", "second", "seconds"])


def interruptions(segments: pd.DataFrame, *, min_seconds: float = 0.5) -> pd.DataFrame:
    """Overlaps where the later speaker starts while the first still has at least ``min_seconds``
    of their segment to say (a back-channel "mm" at the very end of a turn is not one).

    Returns:
        ``start`` (s, when the interruption began), ``by`` (who interrupted), ``of`` (who was
        interrupted), ``seconds`` (the overlap).
    """
    rows = speech_segments(segments)
    found = []
    for i, j in _overlapping_pairs(rows):
        start = rows.at[j, "start"]
        if rows.at[i, "end"] - start >= min_seconds:
            found.append({"start": start, "by": rows.at[j, "speaker"], "of": rows.at[i, "speaker"],
                          "seconds": min(rows.at[i, "end"], rows.at[j, "end"]) - start})
    return pd.DataFrame(found, columns=["start", "by", "of", "seconds"])


def silences(segments: pd.DataFrame, *, min_seconds: float = 2.0) -> pd.DataFrame:
    """Stretches of at least ``min_seconds`` where nobody speaks, between the first and last speech.

    Returns:
        ``start``, ``end``, ``seconds``.
    """
    rows = speech_segments(segments)
    found = []
    reached = None
    for start, end in zip(rows["start"].to_numpy(float), rows["end"].to_numpy(float)):
        if reached is not None and start - reached >= min_seconds:
            found.append({"start": reached, "end": start, "seconds": start - reached})
        reached = end if reached is None else max(reached, end)
    return pd.DataFrame(found, columns=["start", "end", "seconds"])


def turns(segments: pd.DataFrame) -> pd.DataFrame:
    """Consecutive speech segments of one speaker merged into turns.

    Returns:
        ``turn`` (0, 1, ...), ``speaker``, ``start``, ``end`` (s), ``first_segment``,
        ``last_segment`` (row positions in :func:`speech_segments`).
    """
    rows = speech_segments(segments)
    new = rows["speaker"].ne(rows["speaker"].shift()).to_numpy()
    number = np.cumsum(new) - 1
    grouped = rows.assign(turn=number, position=np.arange(len(rows))).groupby("turn")
    return pd.DataFrame(
        {
            "speaker": grouped["speaker"].first(),
            "start": grouped["start"].min(),
            "end": grouped["end"].max(),
            "first_segment": grouped["position"].min(),
            "last_segment": grouped["position"].max(),
        }
    ).reset_index()


def sentiment_score(segments: pd.DataFrame) -> np.ndarray:
    """Per row, P(positive) - P(negative) from the words (in [-1, 1]; NaN without words)."""
    if "text_sentiment_positive" not in segments:
        return np.full(len(segments), np.nan)
    return (segments["text_sentiment_positive"] - segments["text_sentiment_negative"]).to_numpy(float)


def negative_state(segments: pd.DataFrame) -> np.ndarray:
    """Per row, True where the fused label is negative (:data:`NEGATIVE`) or the words are negative."""
    fused = segments["label"].isin(NEGATIVE).to_numpy() if "label" in segments else np.zeros(len(segments), bool)
    words = (segments["sentiment"] == "negative").to_numpy() if "sentiment" in segments else np.zeros(len(segments), bool)
    return fused | words


def emotion_profile(segments: pd.DataFrame) -> pd.DataFrame:
    """Per speaker, the share of their speech seconds given to each fused label.

    Returns:
        index speaker, one column per label of :data:`EMOTIONS` (rows sum to 1 over the labelled time).
    """
    rows = speech_segments(segments)
    rows = rows[rows["label"].notna()]
    seconds = (rows["end"] - rows["start"]).groupby([rows["speaker"], rows["label"]]).sum().unstack(fill_value=0.0)
    seconds = seconds.reindex(columns=list(EMOTIONS), fill_value=0.0)
    return seconds.div(seconds.sum(axis=1), axis=0)


def change_moments(segments: pd.DataFrame, *, threshold: float = 0.5) -> pd.DataFrame:
    """Strong changes of one speaker's fused emotion from one of their segments to the next.

    The change is the total variation distance between the two fused distributions
    (``fused_<label>``; 0 = same, 1 = disjoint).

    Returns:
        ``speaker``, ``start`` (s, start of the later segment), ``before``, ``after`` (labels), ``change``.
    """
    rows = speech_segments(segments)
    probs = rows[[f"fused_{label}" for label in EMOTIONS]].to_numpy(float)
    found = []
    for speaker, own in rows.groupby("speaker", sort=False):
        positions = own.index.to_numpy()
        for a, b in itertools.pairwise(positions):
            change = 0.5 * np.abs(probs[a] - probs[b]).sum()
            if change >= threshold:
                found.append({"speaker": speaker, "start": rows.at[b, "start"], "before": rows.at[a, "label"], "after": rows.at[b, "label"], "change": change})
    return pd.DataFrame(found, columns=["speaker", "start", "before", "after", "change"]).sort_values("start", kind="stable").reset_index(drop=True)


def start_end(values: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Duration-weighted means of ``values`` over the first and the last third of the rows
    (at least one row each; NaN values are left out).

    Args:
        values: shape (n,), in time order. seconds: shape (n,), each row's duration.
    """
    n = len(values)
    if n == 0:
        return np.nan, np.nan
    third = max(1, n // 3)

    def mean(v, w):
        ok = ~np.isnan(v)
        return float(np.average(v[ok], weights=w[ok])) if ok.any() and w[ok].sum() > 0 else np.nan

    return mean(values[:third], seconds[:third]), mean(values[-third:], seconds[-third:])


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """The summary table (:data:`SUMMARY_COLUMNS`) from dicts holding some of its keys."""
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    table["value"] = table["value"].astype(float)
    table["start"] = table["start"].astype(float)
    table["end"] = table["end"].astype(float)
    for column in ("section", "subject", "metric", "note", "inferred_from"):
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def speaker_rows(segments: pd.DataFrame, *, section: str = "speaker") -> list[dict]:
    """Summary rows per speaker: talk seconds and share, mean sentiment, fused emotion shares."""
    rows = []
    talk = talk_time(segments)
    profile = emotion_profile(segments) if "label" in segments else pd.DataFrame()
    speech = speech_segments(segments)
    score = sentiment_score(speech)
    for speaker, t in talk.iterrows():
        rows.append({"section": section, "subject": speaker, "metric": "talk_seconds", "value": t["seconds"], "inferred_from": TIMING})
        rows.append({"section": section, "subject": speaker, "metric": "talk_share", "value": t["share"], "inferred_from": TIMING})
        own = (speech["speaker"] == speaker).to_numpy() & ~np.isnan(score)
        if own.any():
            rows.append({"section": section, "subject": speaker, "metric": "mean_sentiment", "value": float(score[own].mean()), "inferred_from": WORDS})
        if speaker in profile.index:
            for label, share in profile.loc[speaker].items():
                rows.append({"section": section, "subject": speaker, "metric": f"share_{label}", "value": share, "inferred_from": FUSED})
    return rows


def change_rows(segments: pd.DataFrame, *, threshold: float = 0.5) -> list[dict]:
    """Summary rows for :func:`change_moments`."""
    return [
        {"section": "change", "subject": c.speaker, "metric": "emotion_change", "value": c.change, "start": c.start,
         "note": f"{c.before} -> {c.after}", "inferred_from": FUSED}
        for c in change_moments(segments, threshold=threshold).itertuples()
    ]
