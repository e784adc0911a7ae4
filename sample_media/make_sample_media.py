"""Regenerate the project's own sample media (deterministic given the same espeak-ng and FFmpeg).

Needs espeak-ng (Debian package ``espeak-ng``) and the NASA public-domain photo of astronaut
Eileen Collins that the scikit-image wheel ships as ``skimage/data/astronaut.png``:

    pip download --no-deps scikit-image -d /tmp/skimg
    unzip -j /tmp/skimg/scikit_image-*.whl 'skimage/data/astronaut.png' -d /tmp/skimg
    python sample_media/make_sample_media.py /tmp/skimg/astronaut.png

Writes into this folder: face.jpg, interview.mp4 (+ .srt, .csv), call_stereo.flac (+ .csv),
call_mono.flac (+ .csv), classroom.mp4 (face.jpg four times, no sound).
``--verify`` (alone, or after generating) decodes the files and checks them: one face in face.jpg
and in every interview frame, four in every classroom frame, audio and video durations equal, each
transcript line where the decoded speech is, each call turn on its own channel only, all files
together under 2 MB.
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
MONO_CALL = [
    ("agent", "en-us+aunty", 165, 50, 100, "Hello, you are through to the billing team. What can I do for you?"),
    ("customer", "en+klatt", 175, 50, 120, "I was charged twice for the same order last week."),
    ("agent", "en-us+aunty", 160, 50, 100, "I am sorry to hear that. Can you give me the order number, please?"),
    ("customer", "en+klatt", 170, 50, 120, "Yes, it is four five seven two. I paid on Monday."),
    ("agent", "en-us+aunty", 165, 50, 100, "Thank you. I can see both payments, and I have refunded the second one."),
    ("customer", "en+klatt", 180, 50, 130, "That is great, thank you so much for your help!"),
]
PAUSE = 0.6
"""seconds of silence between turns."""

CLASSROOM_SIZE = (480, 270)
CLASSROOM_SECONDS = 10
# face.jpg side (px), mirrored, centre x, y (px), and the periods (s) of its own sway and nod
CLASSROOM = [
    (160, False, 140, 75, 6.0, 4.0),
    (160, True, 340, 77, 7.0, 5.0),
    (200, True, 90, 195, 5.0, 3.5),
    (200, False, 390, 193, 8.0, 4.5),
]
"""The back row (faces of about 50 px) and the front row (about 60 px)."""


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


def make_classroom() -> None:
    """classroom.mp4: :data:`CLASSROOM`, face.jpg (as shipped) four times in an oval vignette on a
    plain wall, each with its own small sway, nod (vertical shift), roll and zoom; no audio."""
    face = cv2.cvtColor(cv2.imread(str(HERE / "face.jpg")), cv2.COLOR_BGR2RGB)
    width, height = CLASSROOM_SIZE
    wall = np.broadcast_to(  # warm grey, lighter at the top
        np.linspace(200, 150, height)[:, None, None] * np.array([1.0, 0.97, 0.9]), (height, width, 3)).astype(np.uint8)
    with av.open(str(HERE / "classroom.mp4"), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "slow"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for i in range(CLASSROOM_SECONDS * FPS):
            t = i / FPS
            frame = wall.astype(np.float32)
            for k, (side, mirrored, cx, cy, sway, nod) in enumerate(CLASSROOM):
                image = face[:, ::-1] if mirrored else face
                scale = side / SIZE * (1.0 + 0.03 * np.sin(2 * np.pi * t / (sway + 2) + k))
                matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 2.0 * np.sin(2 * np.pi * t / nod + k), scale)
                matrix[:, 2] += (cx - SIZE / 2 + 5 * np.sin(2 * np.pi * t / sway + k), cy - SIZE / 2 + 3 * np.sin(2 * np.pi * t / nod))
                placed = cv2.warpAffine(image, matrix, (width, height)).astype(np.float32)
                oval = np.zeros((height, width), np.float32)
                centre = tuple(int(round(v)) for v in matrix @ (SIZE / 2, SIZE / 2, 1))  # where the photo's centre lands
                cv2.ellipse(oval, centre, (int(0.42 * scale * SIZE), int(0.5 * scale * SIZE)), 0, 0, 360, 1.0, -1)
                oval = cv2.GaussianBlur(oval, (0, 0), 0.05 * scale * SIZE)[:, :, None]
                frame = frame * (1 - oval) + placed * oval
            for packet in video.encode(av.VideoFrame.from_ndarray(frame.round().astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)


def make_call(folder: Path) -> None:
    clips, rows = conversation(CALL, folder)
    n = int((rows[-1]["end"] + PAUSE) * RATE)
    stereo = np.zeros((n, 2), np.float32)
    for clip, row in zip(clips, rows):
        first = int(round(row["start"] * RATE))
        stereo[first : first + len(clip), 0 if row["speaker"] == "agent" else 1] = clip
    sf.write(HERE / "call_stereo.flac", stereo, RATE, subtype="PCM_16")
    write_transcripts(rows, HERE / "call_stereo", srt=False)


def make_mono_call(folder: Path) -> None:
    """Both speakers of :data:`MONO_CALL` on one channel: for diarisation."""
    clips, rows = conversation(MONO_CALL, folder)
    mono = np.zeros(int((rows[-1]["end"] + PAUSE) * RATE), np.float32)
    for clip, row in zip(clips, rows):
        first = int(round(row["start"] * RATE))
        mono[first : first + len(clip)] = clip
    sf.write(HERE / "call_mono.flac", mono, RATE, subtype="PCM_16")
    write_transcripts(rows, HERE / "call_mono", srt=False)


def verify() -> None:
    """Decode what is in this folder and check it; raises AssertionError with the reason."""
    import mediapipe as mp

    def faces(rgb: np.ndarray) -> list:
        return detector.process(np.ascontiguousarray(rgb)).detections or []

    def loud_span(samples: np.ndarray, start: float, end: float, t0: float = 0.0) -> tuple[float, float]:
        first = max(int((start - 0.3 - t0) * RATE), 0)
        loud = np.flatnonzero(np.abs(samples[first : int((end + 0.3 - t0) * RATE)]) > 0.01)
        return t0 + (first + loud[0]) / RATE, t0 + (first + loud[-1] + 1) / RATE

    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    assert total < 2_000_000, f"sample_media holds {total} bytes"
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as detector:
        n = len(faces(cv2.cvtColor(cv2.imread(str(HERE / "face.jpg")), cv2.COLOR_BGR2RGB)))
        assert n == 1, f"face.jpg: {n} faces"
        with av.open(str(HERE / "interview.mp4")) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
            declared = float(audio.duration * audio.time_base)
            scores, last = [], 0.0
            for frame in container.decode(video):
                found = faces(frame.to_ndarray(format="rgb24"))
                assert len(found) == 1, f"interview.mp4: {len(found)} faces at {frame.time:.2f} s"
                scores.append(found[0].score[0])
                last = frame.time + 1 / FPS
        with av.open(str(HERE / "classroom.mp4")) as container:
            assert not container.streams.audio, "classroom.mp4 has sound"
            counts = [len(faces(frame.to_ndarray(format="rgb24"))) for frame in container.decode(video=0)]
        assert len(counts) == CLASSROOM_SECONDS * FPS, f"classroom.mp4: {len(counts)} frames"
        assert set(counts) == {len(CLASSROOM)}, f"classroom.mp4: {sorted(set(counts))} faces per frame"
    with av.open(str(HERE / "interview.mp4")) as container:
        frames = list(container.decode(audio=0))
    t0, samples = frames[0].time, np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert abs(declared - last) < 1 / FPS, f"audio {declared:.3f} s, video {last:.3f} s"
    for row in csv.DictReader(open(HERE / "interview.csv")):
        onset, offset = loud_span(samples, float(row["start"]), float(row["end"]), t0)
        assert abs(onset - float(row["start"])) < 0.02 and abs(offset - float(row["end"])) < 0.02, (row, onset, offset)
    stereo, rate = sf.read(HERE / "call_stereo.flac", dtype="float32")
    assert rate == RATE and stereo.shape[1] == 2
    for row in csv.DictReader(open(HERE / "call_stereo.csv")):
        speaking, silent = (0, 1) if row["speaker"] == "agent" else (1, 0)
        onset, offset = loud_span(stereo[:, speaking], float(row["start"]), float(row["end"]))
        assert abs(onset - float(row["start"])) < 0.02 and abs(offset - float(row["end"])) < 0.02, (row, onset, offset)
        assert not stereo[int(onset * RATE) : int(offset * RATE), silent].any(), f"call: crosstalk in {row}"
    mono, rate = sf.read(HERE / "call_mono.flac", dtype="float32")
    assert rate == RATE and mono.ndim == 1
    for row in csv.DictReader(open(HERE / "call_mono.csv")):
        onset, offset = loud_span(mono, float(row["start"]), float(row["end"]))
        assert abs(onset - float(row["start"])) < 0.02 and abs(offset - float(row["end"])) < 0.02, (row, onset, offset)
    print(
        f"ok: {total} bytes; interview {last:.3f} s video / {declared:.3f} s audio, {len(scores)} frames with one face "
        f"(score min {min(scores):.2f}, median {np.median(scores):.2f}); classroom {len(counts)} frames with {len(CLASSROOM)} faces; "
        f"call {len(stereo) / RATE:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("astronaut", type=Path, nargs="?", help="path to skimage/data/astronaut.png (omit with --verify to check only)")
    parser.add_argument("--verify", action="store_true", help="decode and check the files in this folder")
    args = parser.parse_args()
    if args.astronaut is None and not args.verify:
        parser.error("give the astronaut.png path, or --verify")
    if args.astronaut is not None:
        face = make_face(args.astronaut)
        make_classroom()
        with tempfile.TemporaryDirectory() as folder:
            make_interview(face, Path(folder))
            make_call(Path(folder))
            make_mono_call(Path(folder))
    if args.verify:
        verify()


if __name__ == "__main__":
    main()
