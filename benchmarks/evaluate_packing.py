"""Short clips encoded several at a time (``pack=True``) versus one window per clip, in ``mser evaluate``'s item stage.

    .venv/bin/python benchmarks/evaluate_packing.py --data ../shared/data --n 60 [--corpus urdu]

Runs :func:`multimodal_ser.evaluation.predict_manifest` (voice and ASR text, no cache) on ``--n``
clips drawn with a seed across speakers: RAVDESS (3.3-4.1 s of English, their own sentence text
withheld, so that the ASR runs) or URDU (2-3 s of Urdu talk-show speech, the length of the
issue's clips; no sentence text to score the transcripts against), once with ``pack=False`` and
once with ``pack=True``, in one process. Each call loads its models, so a one-clip call of each mode is
timed too and the time per clip is the marginal one: ``(t(n) - t(1)) / (n - 1)``. Agreement of
the two paths per clip: the voice argmax, the absolute differences of the voice probabilities,
and the word error rate of the packed transcript against the solo one. As a yardstick of noise,
the solo path is also run on the clips cut 10 ms later (half an encoder frame): a change no
result should depend on; its voice and transcripts are compared with the solo ones the same way. The voice accuracy against the labels is given for all three (the
packaged head heard these actors: it measures whether packing changes the scores, not recognition).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multimodal_ser.evaluation import predict_manifest
from multimodal_ser.evaluation.datasets import ravdess_manifest, urdu_manifest
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.media import SAMPLE_RATE, load_audio


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(edits, reference words)``: the word-level Levenshtein distance after lower-casing and dropping punctuation."""
    ref, hyp = (re.findall(r"[\w']+", text.lower()) for text in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


def _agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Voice probabilities, shape ``(n, 7)`` each: argmax agreement and |differences|."""
    d = np.abs(reference - other)
    return {"argmax_agreement": float(np.mean(reference.argmax(1) == other.argmax(1))), "max_abs_dp": float(d.max()),
            "mean_abs_dp": float(d.mean()), "p95_clip_max_abs_dp": float(np.percentile(d.max(1), 95))}


def _timed(manifest, *, pack: bool, threads: int):
    start = time.perf_counter()
    predictions = predict_manifest(manifest, modalities=("audio", "text"), use_cache=False, pack=pack, threads=threads, progress=False)
    return time.perf_counter() - start, predictions.table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Packed versus one-window-per-clip item stage of mser evaluate.")
    parser.add_argument("--data", type=Path, required=True, help="folder with ravdess-speech-16k/ (or urdu-16k/)")
    parser.add_argument("--corpus", choices=("ravdess", "urdu"), default="ravdess")
    parser.add_argument("--n", type=int, default=60, help="clips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    table = ravdess_manifest(args.data / "ravdess-speech-16k") if args.corpus == "ravdess" else urdu_manifest(args.data / "urdu-16k")
    # without the clips' own text, so that the ASR runs and its transcripts are compared
    manifest = table.sample(n=args.n, random_state=args.seed).sort_values("path").reset_index(drop=True).assign(text=None)
    times, tables = {}, {}
    for pack in (False, True):
        one, _ = _timed(manifest.iloc[:1], pack=pack, threads=args.threads)
        total, tables[pack] = _timed(manifest, pack=pack, threads=args.threads)
        times[pack] = {"one_clip_s": one, "total_s": total, "per_clip_s": (total - one) / (args.n - 1)}
    _, shifted = _timed(manifest.assign(start=0.01), pack=False, threads=args.threads)
    solo, packed = tables[False], tables[True]
    columns = [f"audio_{label}" for label in EMOTIONS]
    p_solo, p_packed, p_shifted = (t[columns].to_numpy() for t in (solo, packed, shifted))
    errors = [word_errors(a, b) for a, b in zip(solo["text"].fillna(""), packed["text"].fillna(""), strict=True)]
    shift_errors = [word_errors(a, b) for a, b in zip(solo["text"].fillna(""), shifted["text"].fillna(""), strict=True)]
    # what was said (URDU has no transcripts)
    sentences = table.set_index("path").loc[solo["path"], "text"].to_numpy() if args.corpus == "ravdess" else None

    def wer(hypotheses) -> float | None:
        if sentences is None:
            return None
        counts = [word_errors(reference, hypothesis) for reference, hypothesis in zip(sentences, hypotheses.fillna(""), strict=True)]
        return sum(e for e, _ in counts) / max(sum(n for _, n in counts), 1)
    labels = solo["label"].to_numpy()
    report = {
        "corpus": args.corpus,
        "clips": args.n,
        "seconds_per_clip": float(np.mean([len(load_audio(path)) for path in manifest["path"]]) / SAMPLE_RATE),
        "solo": times[False],
        "packed": times[True],
        "speed_up_per_clip": times[False]["per_clip_s"] / times[True]["per_clip_s"],
        "speed_up_total": times[False]["total_s"] / times[True]["total_s"],
        "voice_packed_vs_solo": _agreement(p_solo, p_packed),
        "voice_shifted_10ms_vs_solo": _agreement(p_solo, p_shifted),
        "voice_accuracy": {name: float(np.mean(np.asarray(EMOTIONS)[p.argmax(1)] == labels))
                           for name, p in (("solo", p_solo), ("packed", p_packed), ("shifted_10ms", p_shifted))},
        "asr_wer_packed_vs_solo": sum(e for e, _ in errors) / max(sum(n for _, n in errors), 1),
        "asr_identical_share": float(np.mean([e == 0 for e, _ in errors])),
        "asr_wer_shifted_10ms_vs_solo": sum(e for e, _ in shift_errors) / max(sum(n for _, n in shift_errors), 1),
        "asr_identical_share_shifted_10ms": float(np.mean([e == 0 for e, _ in shift_errors])),
        "asr_differing_examples": [{"solo": a, "packed": b} for (a, b), (e, _) in zip(zip(solo["text"], packed["text"]), errors) if e][:8],
        "asr_wer_against_the_sentence": {name: wer(t["text"]) for name, t in (("solo", solo), ("packed", packed), ("shifted_10ms", shifted))},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
