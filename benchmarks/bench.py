"""Side-by-side speed and memory, measured in one run (``make bench``).

Each measurement runs in a fresh Python process, so its peak resident memory is its own.
Each time is the fastest of ``--repeat`` runs (the speed of a shared machine drifts). Printed:
real-time factor (processing seconds / media seconds) and peak RSS of
  * plain openai-whisper transcription (base, beam 5, word timestamps) — the reference,
  * ``mser analyze`` with text only (ASR + text branch), with audio+text, and with all three,
and their ratios; then peak memory of ``mser analyze --modalities audio,text`` on a recording
of 1 and of 8 times the length (memory must stay flat in length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MEDIA = [REPO / "sample_media" / "interview.mp4"]

_PLAIN_WHISPER = """
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from multimodal_ser.media import load_audio
from multimodal_ser.weights import load_openai_whisper
import whisper
model = load_openai_whisper("base")
seconds = float("inf")
for _ in range({repeat}):  # the best of several: the machine's speed drifts
    start = time.perf_counter()
    audio = load_audio(sys.argv[1])
    result = whisper.transcribe(model, audio, beam_size=5, word_timestamps=True, fp16=False, language="en")
    seconds = min(seconds, time.perf_counter() - start)
print(json.dumps({{"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "text": result["text"]}}))
"""

_MSER = """
import json, resource, sys, time
from multimodal_ser import AnalysisOptions, Analyzer
analyzer = Analyzer(AnalysisOptions(modalities=tuple(sys.argv[2].split(",")), language="en", threads={threads}))
analyzer.analyze(sys.argv[1], transcript=None)  # warm-up: loads every model once
seconds = float("inf")
for _ in range({repeat}):  # the best of several: the machine's speed drifts
    start = time.perf_counter()
    timeline = analyzer.analyze(sys.argv[1])
    seconds = min(seconds, time.perf_counter() - start)
print(json.dumps({{"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "text": " ".join(timeline.segments["text"])}}))
"""

_PLAIN_WARM = _PLAIN_WHISPER.replace("seconds = float", "whisper.transcribe(model, load_audio(sys.argv[1]), beam_size=5, fp16=False, language='en')\nseconds = float")


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _duration(path: Path) -> float:
    from multimodal_ser.media import probe

    return probe(path).duration


def _repeated_audio(path: Path, times: int, folder: Path) -> Path:
    """``path``'s audio ``times`` over, as a 16 kHz WAV (a longer recording of the same kind)."""
    import numpy as np
    import soundfile as sf

    from multimodal_ser.media import SAMPLE_RATE, load_audio

    audio = load_audio(path)
    target = folder / f"{path.stem}-x{times}.wav"
    sf.write(target, np.tile(audio, times), SAMPLE_RATE)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("media", nargs="*", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long", type=int, default=8, help="length multiple for the memory-flatness check")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the fastest counts")
    args = parser.parse_args()
    rows = []
    for media in args.media:
        duration = _duration(media)
        plain = _run(_PLAIN_WARM.format(threads=args.threads, repeat=args.repeat), str(media))
        runs = {"openai-whisper transcribe": plain}
        for modalities in ("text", "audio,text", "audio,text,face"):
            runs[f"mser analyze {modalities}"] = _run(_MSER.format(threads=args.threads, repeat=args.repeat), str(media), modalities)
        print(f"\n{media.name}: {duration:.1f} s of media, {args.threads} threads (models loaded and warmed up before timing; best of {args.repeat})")
        print(f"{'run':32} {'seconds':>8} {'RTF':>7} {'vs whisper':>10} {'peak MB':>8}")
        for name, r in runs.items():
            print(f"{name:32} {r['seconds']:8.2f} {r['seconds'] / duration:7.3f} {r['seconds'] / plain['seconds']:10.2f} {r['peak_mb']:8.0f}")
            rows.append({"media": media.name, "run": name, "duration": duration, **{k: r[k] for k in ("seconds", "peak_mb")}})
        voice_cost = runs["mser analyze audio,text"]["seconds"] - runs["mser analyze text"]["seconds"]
        print(f"audio branch adds {voice_cost:.2f} s ({voice_cost / duration:.3f} x real time) on top of ASR + text")
    with tempfile.TemporaryDirectory() as folder:
        short = _repeated_audio(args.media[0], 1, Path(folder))
        long = _repeated_audio(args.media[0], args.long, Path(folder))
        print(f"\nmemory flatness, mser analyze audio,text on {short.name} and {long.name}:")
        for path in (short, long):
            r = _run(_MSER.format(threads=args.threads, repeat=1), str(path), "audio,text")
            d = _duration(path)
            print(f"{d:8.1f} s of audio: peak {r['peak_mb']:.0f} MB, RTF {r['seconds'] / d:.3f}")
            rows.append({"media": path.name, "run": "flatness audio,text", "duration": d, "seconds": r["seconds"], "peak_mb": r["peak_mb"]})
    out = REPO / "bench_out" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
