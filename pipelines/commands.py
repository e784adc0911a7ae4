"""The use-case sub-commands of ``mser`` (interview, call, classroom): their flags and how they run.

Standard library only at import, so ``mser --help`` stays fast; the pipelines load when one runs.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from multimodal_ser.options import AnalysisOptions, add_option_arguments, option_values

USE_CASES = {
    "interview": "interview: a profile per speaker, each answer's emotional arc, moments of strong change",
    "call": "sales/support call, mono or stereo: talk time, overlaps, interruptions, silences, the customer's trajectory, escalations",
    "classroom": "classroom video: attention and engagement per face and for the room (no emotion inferred, no person identified)",
}

ANALYSIS_OPTIONS = {"interview": ("language", "asr_model", "fps", "threads"), "call": ("language", "asr_model", "threads"), "classroom": ()}
"""The :class:`~multimodal_ser.options.AnalysisOptions` flags each use case takes."""

EU_NOTES = {
    "interview": "EU AI Act art. 5(1)(f): do not infer the emotions of job applicants or employees in EU workplaces.",
    "call": "EU AI Act art. 5(1)(f): inferring the agent's (an employee's) emotions is prohibited in EU workplaces; use --customer-only there.",
    "classroom": "The expression network never runs here (EU AI Act art. 5(1)(f): no emotion inference in education institutions).",
}


def add_commands(commands: argparse._SubParsersAction, existing_file) -> None:
    """Add the use-case sub-commands to ``mser``'s sub-parsers; ``existing_file`` validates paths."""
    for name, help in USE_CASES.items():
        parser = commands.add_parser(name, help=help, description=f"{help}. Writes segments/words/frames.parquet and summary.parquet "
                                     f"into OUT and prints a short summary. {EU_NOTES[name]}")
        parser.add_argument("media", type=existing_file, metavar="MEDIA", help="the recording")
        parser.add_argument("--out", type=Path, required=True, help="output folder (a timeline folder, replaced as a whole)")
        if name != "classroom":
            parser.add_argument("--transcript", type=existing_file, help="SRT, WebVTT, JSON or CSV transcript with speaker names; replaces ASR")
        if name == "interview":
            parser.add_argument("--interviewee", help="the interviewee's speaker name (default: who talks longest)")
        elif name == "call":
            parser.add_argument("--agent-channel", type=int, choices=(0, 1), default=0, help="stereo: the agent's channel (default 0, left)")
            parser.add_argument("--agent", help="mono: the agent's speaker name (default: a speaker named agent, else the first to speak)")
            parser.add_argument("--customer-only", action="store_true", help="never analyse the agent (EU workplaces: AI Act art. 5(1)(f))")
        else:
            parser.add_argument("--fps", type=float, default=2.0, help="frames analysed per second (default 2)")
            parser.add_argument("--bin", type=float, default=60.0, help="summary bin in seconds (default 60)")
        add_option_arguments(parser, ANALYSIS_OPTIONS[name])


def run(args: argparse.Namespace):
    """Run the use case ``args.command`` and save its timeline and summary into ``args.out``.

    Returns:
        the summary table (:data:`pipelines.conversation.SUMMARY_COLUMNS`).
    """
    from multimodal_ser.timeline import check_output_dir

    check_output_dir(args.out)
    module = importlib.import_module(f"pipelines.{args.command}")
    if args.command == "classroom":
        timeline = module.analyze_classroom(args.media, fps=args.fps, bin_seconds=args.bin)
        summary = module.classroom_summary(timeline.frames, bin_seconds=args.bin)
    else:
        from multimodal_ser import Analyzer

        modalities = module.CALL_MODALITIES if args.command == "call" else AnalysisOptions().modalities
        analyzer = Analyzer(AnalysisOptions(modalities=modalities, **option_values(args, ANALYSIS_OPTIONS[args.command])))
        if args.command == "call":
            timeline = module.analyze_call(args.media, transcript=args.transcript, agent_channel=args.agent_channel, agent=args.agent,
                                           customer_only=args.customer_only, analyzer=analyzer)
            summary = module.call_summary(timeline.segments)
        else:
            timeline = module.analyze_interview(args.media, transcript=args.transcript, analyzer=analyzer)
            summary = module.interview_summary(timeline.segments, interviewee=args.interviewee)
    timeline.save(args.out, summary=summary)
    return summary


def short_summary(summary) -> str:
    """A few readable lines of a summary table: every row but zero emotion shares and per-bin rows."""
    shown = summary[~summary["section"].isin(["face_bin"]) & ~(summary["metric"].str.startswith("share_") & (summary["value"] == 0))]
    lines = []
    for row in shown.itertuples():
        when = f" at {row.start:.1f} s" if row.start == row.start else ""
        note = f"  {row.note[:70]}" if row.note else ""
        lines.append(f"{row.section:<12} {row.subject:<10} {row.metric:<18} {row.value:8.3f}{when}{note}")
    return "\n".join(lines)
