"""Video interviews: a profile per speaker, each answer's emotional arc, and moments of strong change.

Speakers come from the ``speaker`` column however it was filled (the transcript's names, or
diarisation). The interviewee is the speaker who talks longest unless named; an answer is one of
their turns. EU AI Act art. 5(1)(f): inferring the emotions of job applicants or employees is
prohibited in EU workplaces; do not use this on recruitment interviews there.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from multimodal_ser import AnalysisOptions, Analyzer, Timeline

from . import conversation as conv


def analyze_interview(path: str | Path, *, transcript: str | Path | None = None, analyzer: Analyzer | None = None) -> Timeline:
    """The timeline of an interview (voice, words and face), with the ``pipeline`` noted."""
    analyzer = analyzer or Analyzer(AnalysisOptions())
    timeline = analyzer.analyze(path, transcript=transcript)
    timeline.metadata["pipeline"] = "interview"
    return timeline


def answer_arcs(segments: pd.DataFrame, interviewee: str) -> pd.DataFrame:
    """One row per answer (a turn of ``interviewee``).

    Returns:
        ``start``, ``end`` (s), ``arc`` (the fused labels of its segments in order, repeats merged,
        joined by `` -> ``), ``sentiment_start``, ``sentiment_end`` (words' P(positive) - P(negative)
        over its first and last third), ``text``.
    """
    rows = conv.speech_segments(segments)
    score = conv.sentiment_score(rows)
    seconds = (rows["end"] - rows["start"]).to_numpy(float)
    answers = []
    for turn in conv.turns(segments).itertuples():
        if turn.speaker != interviewee:
            continue
        span = slice(turn.first_segment, turn.last_segment + 1)
        labels = [label for label in rows["label"].iloc[span] if isinstance(label, str)]
        arc = [label for i, label in enumerate(labels) if i == 0 or label != labels[i - 1]]
        first, last = conv.start_end(score[span], seconds[span])
        answers.append({"start": turn.start, "end": turn.end, "arc": " -> ".join(arc), "sentiment_start": first,
                        "sentiment_end": last, "text": " ".join(t for t in rows["text"].iloc[span] if t)})
    return pd.DataFrame(answers, columns=["start", "end", "arc", "sentiment_start", "sentiment_end", "text"])


def interview_summary(segments: pd.DataFrame, *, interviewee: str | None = None, change_threshold: float = 0.5) -> pd.DataFrame:
    """The interview's summary table (:data:`pipelines.conversation.SUMMARY_COLUMNS`).

    Sections: ``speaker`` (profile: talk time and share, mean sentiment, fused emotion shares),
    ``answer`` (each answer's arc; ``value`` = sentiment at its end minus at its start), ``change``
    (a speaker's fused emotion moving by at least ``change_threshold`` in total variation).
    """
    rows = conv.speaker_rows(segments)
    talk = conv.talk_time(segments)
    if interviewee is None and len(talk):
        interviewee = str(talk["seconds"].idxmax())
    if interviewee is not None:
        for a in answer_arcs(segments, interviewee).itertuples():
            rows.append({"section": "answer", "subject": interviewee, "metric": "sentiment_change", "value": a.sentiment_end - a.sentiment_start,
                         "start": a.start, "end": a.end, "note": f"{a.arc}: {a.text}", "inferred_from": f"{conv.FUSED}; value from words"})
    rows += conv.change_rows(segments, threshold=change_threshold)
    return conv.summary_table(rows)

