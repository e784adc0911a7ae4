"""Sales/support calls, mono or stereo: roles (agent, customer), talk time, overlaps, interruptions,
silences, the customer's sentiment and emotion from start to end, and escalation moments.

Roles come from the channels of a stereo file (one speaker per channel), else from the ``speaker``
column however it was filled (the transcript's speaker names, or diarisation): speakers named
``agent``/``customer`` keep their names, ``agent=`` names the agent, otherwise the first to speak
is taken as the agent. EU AI Act art. 5(1)(f): inferring the emotions of employees (the agent) in a
workplace is prohibited in the EU; use ``customer_only`` there.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_ser import AnalysisOptions, Analyzer, Timeline
from multimodal_ser.errors import MserError
from multimodal_ser.media import probe
from multimodal_ser.transcript import read_transcript

from . import conversation as conv

log = logging.getLogger(__name__)

ROLES = ("agent", "customer")
CALL_MODALITIES = ("audio", "text")
"""Calls have no video: the voice and the words."""


def _role_transcript(transcript: Path, speakers: set[str], role: str, duration: float, folder: Path) -> Path | None:
    """The rows of ``transcript`` spoken by ``speakers`` (lower-case names) as a CSV named ``role``."""
    rows = [s for s in read_transcript(transcript, media_duration=duration) if (s.speaker or "").lower() in speakers]
    if not rows:
        return None
    path = folder / f"{role}.csv"
    pd.DataFrame([{"start": s.start, "end": s.end, "speaker": role, "text": s.text} for s in rows]).to_csv(path, index=False)
    return path


def assign_roles(speakers: list[str], *, agent: str | None = None) -> dict[str, str]:
    """``{speaker: role}`` for the speakers of a call, in order of first speech.

    Names ``agent``/``customer`` (any case) are kept; else ``agent`` names the agent; else the
    first speaker is the agent. Every other speaker is a customer.

    Raises:
        MserError: no speaker at all, or ``agent`` is not one of them.
    """
    if not speakers:
        raise MserError("the call has no speakers: give a stereo file (one speaker per channel) or a transcript naming them")
    lower = {s: s.lower() for s in speakers}
    if agent is None and set(lower.values()) <= set(ROLES):
        return {s: lower[s] for s in speakers}
    if agent is not None and agent not in speakers:
        raise MserError(f"agent {agent!r} is not a speaker of the call ({', '.join(speakers)})")
    agent = agent if agent is not None else speakers[0]
    return {s: "agent" if s == agent else "customer" for s in speakers}


def analyze_call(
    path: str | Path,
    *,
    transcript: str | Path | None = None,
    agent_channel: int = 0,
    agent: str | None = None,
    customer_only: bool = False,
    analyzer: Analyzer | None = None,
) -> Timeline:
    """One timeline of a call, its speech segments labelled ``agent`` or ``customer``.

    Args:
        path: audio (or video) file; 2 channels = one speaker per channel, else mono.
        transcript: replaces ASR; its speaker names give the roles of a mono call.
        agent_channel: the agent's channel of a stereo call (0 left, 1 right).
        agent: the agent's speaker name in a mono call (default: names agent/customer, else the
            first to speak).
        customer_only: never analyse the agent (EU workplaces). A mono call then needs a
            transcript, so that the agent's speech is known before any analysis.

    Raises:
        MserError: bad input, naming the file, or no way to tell the speakers apart.
    """
    path = Path(path)
    info = probe(path)
    analyzer = analyzer or Analyzer(AnalysisOptions(modalities=CALL_MODALITIES))
    if info.audio_channels == 2:
        parts, roles = _stereo_parts(path, info.duration, transcript, agent_channel, customer_only, analyzer)
    else:
        parts, roles = _mono_parts(path, info.duration, transcript, agent, customer_only, analyzer)
    speech = [Timeline(p.segments[p.segments["speech"]], p.words, p.frames, p.metadata) for p in parts]
    metadata = {**parts[0].metadata, "pipeline": "call", "stereo": info.audio_channels == 2, "roles": roles, "customer_only": customer_only}
    return Timeline.concat(speech, metadata)


def _stereo_parts(path, duration, transcript, agent_channel, customer_only, analyzer) -> tuple[list[Timeline], dict]:
    channels = {"agent": agent_channel, "customer": 1 - agent_channel}
    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for role in ROLES:
            if customer_only and role == "agent":
                continue
            own = _role_transcript(Path(transcript), {role}, role, duration, Path(folder)) if transcript else None
            if transcript and own is None:
                log.warning("%s: the transcript has no rows for speaker %r", transcript, role)
                continue
            parts.append(analyzer.analyze(path, transcript=own, channel=channels[role], speaker=role))
    if not parts:
        raise MserError(f"{transcript}: no rows for speaker 'customer'" + ("" if customer_only else " or 'agent'"))
    return parts, {f"channel {c}": role for role, c in channels.items()}


def _mono_parts(path, duration, transcript, agent, customer_only, analyzer) -> tuple[list[Timeline], dict]:
    if customer_only:
        if transcript is None:
            raise MserError(f"{path}: --customer-only on a mono call needs a transcript naming the speakers (or a stereo file)")
        named = [s.speaker for s in read_transcript(transcript, media_duration=duration) if s.speaker]
        roles = assign_roles(list(dict.fromkeys(named)), agent=agent)
        customers = {s.lower() for s, role in roles.items() if role == "customer"}
        with tempfile.TemporaryDirectory() as folder:
            own = _role_transcript(Path(transcript), customers, "customer", duration, Path(folder))
            if own is None:
                raise MserError(f"{transcript}: no rows for a customer")
            return [analyzer.analyze(path, transcript=own)], roles
    timeline = analyzer.analyze(path, transcript=transcript)
    speech = conv.speech_segments(timeline.segments)
    try:
        roles = assign_roles(list(dict.fromkeys(speech["speaker"])), agent=agent)
    except MserError as e:
        raise MserError(f"{path}: {e}") from e
    timeline.segments["speaker"] = timeline.segments["speaker"].map(roles)
    timeline.words["speaker"] = timeline.words["speaker"].map(roles)
    return [timeline], roles


def escalations(segments: pd.DataFrame, *, role: str = "customer") -> pd.DataFrame:
    """Where ``role`` turns negative: a segment in a negative state (fused angry, sad, fearful or
    disgust, or negative words) after one that was not (or as their first).

    Returns:
        ``start``, ``end`` (s), ``label`` (fused), ``sentiment`` (words), ``text``.
    """
    rows = conv.speech_segments(segments)
    rows = rows[rows["speaker"] == role].reset_index(drop=True)
    negative = conv.negative_state(rows)
    turned = negative & ~np.concatenate([[False], negative[:-1]])
    columns = ["start", "end", "label", "sentiment", "text"]
    return rows.loc[turned, [c for c in columns if c in rows]].reindex(columns=columns).reset_index(drop=True)


def call_summary(segments: pd.DataFrame, *, silence_seconds: float = 2.0, interruption_seconds: float = 0.5) -> pd.DataFrame:
    """The call's summary table (:data:`pipelines.conversation.SUMMARY_COLUMNS`).

    Sections: ``speaker`` (talk time and share, mean sentiment, fused emotion shares), ``call``
    (overlap seconds, interruptions by each role, silences), ``customer`` (sentiment and negative
    share over the first and last third of their speech), ``silence``, ``interruption`` and
    ``escalation`` moments.
    """
    rows = conv.speaker_rows(segments)
    found = conv.overlaps(segments)
    cuts = conv.interruptions(segments, min_seconds=interruption_seconds)
    quiet = conv.silences(segments, min_seconds=silence_seconds)
    timing = conv.TIMING
    rows += [
        {"section": "call", "subject": "call", "metric": "overlap_seconds", "value": found["seconds"].sum(), "inferred_from": timing},
        {"section": "call", "subject": "call", "metric": "overlaps", "value": len(found), "inferred_from": timing},
        {"section": "call", "subject": "call", "metric": "silences", "value": len(quiet), "inferred_from": timing},
        {"section": "call", "subject": "call", "metric": "silence_seconds", "value": quiet["seconds"].sum(), "inferred_from": timing},
    ]
    for role in ROLES:
        rows.append({"section": "call", "subject": role, "metric": "interruptions", "value": int((cuts["by"] == role).sum()), "inferred_from": timing})
    rows += [{"section": "silence", "subject": "call", "metric": "silence", "value": s.seconds, "start": s.start, "end": s.end, "inferred_from": timing} for s in quiet.itertuples()]
    rows += [{"section": "interruption", "subject": c.by, "metric": "interruption", "value": c.seconds, "start": c.start, "note": f"{c.by} cut into {c.of}", "inferred_from": timing} for c in cuts.itertuples()]
    customer = conv.speech_segments(segments)
    customer = customer[customer["speaker"] == "customer"]
    if len(customer):
        seconds = (customer["end"] - customer["start"]).to_numpy(float)
        for metric, values, source in (
            ("sentiment", conv.sentiment_score(customer), conv.WORDS),
            ("negative_share", conv.negative_state(customer).astype(float), f"{conv.FUSED} and words"),
        ):
            first, last = conv.start_end(values, seconds)
            rows.append({"section": "customer", "subject": "customer", "metric": f"{metric}_start", "value": first, "inferred_from": source})
            rows.append({"section": "customer", "subject": "customer", "metric": f"{metric}_end", "value": last, "inferred_from": source})
        rows += [
            {"section": "escalation", "subject": "customer", "metric": "escalation", "value": e.end - e.start, "start": e.start, "end": e.end,
             "note": f"{e.label}, words {e.sentiment}: {e.text}", "inferred_from": f"{conv.FUSED} and words"}
            for e in escalations(segments).itertuples()
        ]
    return conv.summary_table(rows)

