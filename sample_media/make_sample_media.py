"""Regenerate the project's own sample media (deterministic given the same espeak-ng and FFmpeg).

Needs espeak-ng (Debian package ``espeak-ng``) and the NASA public-domain photo of astronaut
Eileen Collins that the scikit-image wheel ships as ``skimage/data/astronaut.png``:

    pip download --no-deps scikit-image -d /tmp/skimg
    unzip -j /tmp/skimg/scikit_image-*.whl 'skimage/data/astronaut.png' -d /tmp/skimg
    python sample_media/make_sample_media.py /tmp/skimg/astronaut.png

Writes into this folder: face.jpg, interview.mp4 (+ .srt, .csv), call_stereo.flac (+ .csv).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
RATE = 16_000
FPS = 15
SIZE = 320
FACE_CROP = (66, 0, 386, 320)
"""x0, y0, x1, y1 in the 512x512 astronaut photo: the face (about 104 px) with head and shoulders."""

# speaker, espeak-ng voice, speed (words/min), pitch (0-99), amplitude (0-200), line
INTERVIEW = [
    ("HOST", "en-us", 160, 45, 100, "Thank you for coming in today. Please tell me about your week."),
    ("GUEST", "en-us+f3", 185, 75, 120, "I am so happy! I got the job, and I feel absolutely wonderful!"),
    ("HOST", "en-us", 175, 30, 180, "That is outrageous. They lied to you again? I am furious about it!"),
    ("GUEST", "en-us+f3", 120, 25, 70, "I feel so sad and alone since my best friend moved away."),
    ("HOST", "en-us", 200, 80, 110, "Oh no, I am scared. Something terrible is going to happen to us."),
]
CALL = [
    ("agent", "en-us", 160, 50, 100, "Good morning, thank you for calling. How can I help you today?"),
    ("customer", "en-us+m3", 185, 35, 180, "This is the third time my order has been late. I am really angry!"),
    ("agent", "en-us", 150, 50, 100, "I am very sorry about that. Let me fix it for you right away."),
]
PAUSE = 0.6
"""seconds of silence between turns."""


def speak(voice: str, speed: int, pitch: int, amplitude: int, text: str, folder: Path) -> np.ndarray:
    """espeak-ng speech at 16 kHz mono float32, leading/trailing silence trimmed."""
    wav = folder / "line.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-w", str(wav), text], check=True)
    samples, rate = sf.read(wav, dtype="float32")
    samples = _resample(samples, rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1]


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=rate, target_sr=RATE).astype(np.float32)


def conversation(lines, folder: Path) -> tuple[list[np.ndarray], list[dict]]:
    """Each line's samples and its ``start, end, speaker, text`` on the shared clock."""
    clips, rows, t = [], [], PAUSE
    for speaker, voice, speed, pitch, amplitude, text in lines:
        clip = speak(voice, speed, pitch, amplitude, text, folder)
        rows.append({"start": round(t, 3), "end": round(t + len(clip) / RATE, 3), "speaker": speaker, "text": text})
        clips.append(clip)
        t += len(clip) / RATE + PAUSE
    return clips, rows


def _timestamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_transcripts(rows: list[dict], stem: Path, *, srt: bool) -> None:
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["start", "end", "speaker", "text"])
        writer.writeheader()
        writer.writerows(rows)
    if srt:
        cues = [f"{i}\n{_timestamp(r['start'])} --> {_timestamp(r['end'])}\n{r['speaker']}: {r['text']}\n" for i, r in enumerate(rows, 1)]
        stem.with_suffix(".srt").write_text("\n".join(cues))


def make_face(astronaut: Path) -> np.ndarray:
    image = cv2.imread(str(astronaut))
    x0, y0, x1, y1 = FACE_CROP
    face = cv2.resize(image[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(HERE / "face.jpg"), face, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.cvtColor(face, cv2.COLOR_BGR2RGB)


def make_interview(face: np.ndarray, folder: Path) -> None:
    clips, rows = conversation(INTERVIEW, folder)
    track = np.concatenate([np.zeros(int(PAUSE * RATE), np.float32)] + [np.concatenate([c, np.zeros(int(PAUSE * RATE), np.float32)]) for c in clips])
    duration = len(track) / RATE
    with av.open(str(HERE / "interview.mp4"), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "slow"})
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=RATE, bit_rate=32_000)
        audio.layout = "mono"
        for i in range(int(round(duration * FPS))):
            t = i / FPS
            scale = 1.0 + 0.04 * np.sin(2 * np.pi * t / 10.0)  # slow breathing zoom
            shift_x, shift_y = 6 * np.sin(2 * np.pi * t / 7.0), 3 * np.sin(2 * np.pi * t / 5.0)
            matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 1.5 * np.sin(2 * np.pi * t / 9.0), scale)
            matrix[:, 2] += (shift_x, shift_y)
            frame = cv2.warpAffine(face, matrix, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        for start in range(0, len(track), 1024):
            frame = av.AudioFrame.from_ndarray(track[start : start + 1024][None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    write_transcripts(rows, HERE / "interview", srt=True)


def make_call(folder: Path) -> None:
    clips, rows = conversation(CALL, folder)
    n = int((rows[-1]["end"] + PAUSE) * RATE)
    stereo = np.zeros((n, 2), np.float32)
    for clip, row in zip(clips, rows):
        first = int(round(row["start"] * RATE))
        stereo[first : first + len(clip), 0 if row["speaker"] == "agent" else 1] = clip
    sf.write(HERE / "call_stereo.flac", stereo, RATE, subtype="PCM_16")
    write_transcripts(rows, HERE / "call_stereo", srt=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("astronaut", type=Path, help="path to skimage/data/astronaut.png")
    args = parser.parse_args()
    face = make_face(args.astronaut)
    with tempfile.TemporaryDirectory() as folder:
        make_interview(face, Path(folder))
        make_call(Path(folder))


if __name__ == "__main__":
    main()
