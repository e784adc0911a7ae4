"""Stereo sales/support calls: each channel is one speaker (agent, customer).

Analyses each channel on its own (voice and words; calls have no video), merges the two
timelines on the call's clock, and summarises per speaker: share of each emotion and sentiment
over speech time, and the moments the customer's voice or words turned negative.

    python -m pipelines.call_center call.wav --out out/call [--agent-channel 0] [--transcript call.csv]

A transcript (CSV/SRT/VTT/JSON) with speaker names ``agent``/``customer`` is split by speaker and
used for the matching channel. EU AI Act art. 5(1)(f): inferring the emotions of employees (the
agent) in a workplace is prohibited in the EU; pass ``--customer-only`` there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import pandas as pd

from multimodal_ser import AnalysisOptions, Analyzer, Timeline
from multimodal_ser.errors import MserError
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.media import probe
from multimodal_ser.transcript import read_transcript

log = logging.getLogger("pipelines.call_center")

SPEAKERS = ("agent", "customer")


def _channel_transcript(transcript: Path, speaker: str, duration: float, folder: Path) -> Path | None:
    """The rows of ``transcript`` spoken by ``speaker``, as a CSV the analyzer reads."""
    rows = [s for s in read_transcript(transcript, media_duration=duration) if (s.speaker or "").lower() == speaker]
    if not rows:
        return None
    path = folder / f"{speaker}.csv"
    pd.DataFrame([{"start": s.start, "end": s.end, "speaker": speaker, "text": s.text} for s in rows]).to_csv(path, index=False)
    return path


def analyze_call(path: Path, *, agent_channel: int = 0, transcript: Path | None = None, customer_only: bool = False, analyzer: Analyzer | None = None) -> Timeline:
    """One timeline for a stereo call: speech segments of both channels, labelled by speaker."""
    info = probe(path)
    if info.audio_channels != 2:
        raise MserError(f"{path}: a call needs 2 audio channels (agent, customer), found {info.audio_channels}")
    analyzer = analyzer or Analyzer(AnalysisOptions(modalities=("audio", "text")))
    channels = {"agent": agent_channel, "customer": 1 - agent_channel}
    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for speaker in SPEAKERS:
            if customer_only and speaker == "agent":
                continue
            own = _channel_transcript(transcript, speaker, info.duration, Path(folder)) if transcript else None
            if transcript and own is None:
                log.warning("%s: the transcript has no rows for speaker %r", transcript, speaker)
                continue
            parts.append(analyzer.analyze(path, transcript=own, channel=channels[speaker], speaker=speaker))
    speech = [Timeline(p.segments[p.segments["speech"]], p.words, p.frames, p.metadata) for p in parts]
    metadata = {**parts[0].metadata, "pipeline": "call_center", "channels": channels, "customer_only": customer_only}
    return Timeline.concat(speech, metadata)


def summarize(segments: pd.DataFrame) -> dict:
    """Per speaker: speech seconds, share of speech time per fused emotion and per sentiment,
    and the start times of the customer's negative moments (fused angry/sad/disgust/fearful,
    or negative sentiment)."""
    summary = {}
    for speaker, rows in segments.groupby("speaker"):
        seconds = (rows["end"] - rows["start"]).to_numpy()
        total = float(seconds.sum())
        summary[speaker] = {
            "speech_seconds": round(total, 2),
            "emotion_share": {e: round(float(seconds[(rows["label"] == e).to_numpy()].sum() / total), 3) for e in EMOTIONS} if total else {},
            "sentiment_share": {
                s: round(float(seconds[(rows["sentiment"] == s).to_numpy()].sum() / total), 3) for s in ("negative", "neutral", "positive")
            }
            if total
            else {},
        }
        if speaker == "customer":
            negative = rows["label"].isin(["angry", "sad", "disgust", "fearful"]) | (rows["sentiment"] == "negative")
            summary[speaker]["negative_moments"] = [round(float(t), 2) for t in rows.loc[negative, "start"]]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("call", type=Path, help="stereo audio file")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--agent-channel", type=int, choices=(0, 1), default=0)
    parser.add_argument("--transcript", type=Path, help="transcript whose speakers are named agent / customer")
    parser.add_argument("--customer-only", action="store_true", help="do not analyse the agent (EU workplaces)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        timeline = analyze_call(args.call, agent_channel=args.agent_channel, transcript=args.transcript, customer_only=args.customer_only)
    except MserError as e:
        print(f"call_center: {e}", file=sys.stderr)
        return 1
    timeline.save(args.out)
    summary = summarize(timeline.segments)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
