"""Build the bundled sample clip stream_mmsa/samples/sample.mp4 and its ground truth sample.json.

Real material only: the face is scikit-image's astronaut photograph (public domain),
filmed by a slowly drifting virtual camera; the voice is espeak-ng reading clearly
positive then clearly negative sentences (brighter and quicker for the positive ones,
lower and slower for the negative ones, as people tend to speak). Two deliberate
faults test the missing-modality paths: the camera pans away from the face for ~3 s
while speech goes on, and ~3 s pass with no speech (room noise only) while the face
stays in view. The sidecar records every sentence, fault and parameter, so tests can
check events against it.

Deterministic: espeak-ng and the encoders are fed the same input in the same order
(fixed noise seed, single-threaded x264). Needs espeak-ng (Debian package).

    python scripts/make_sample.py [--out stream_mmsa/samples]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from stream_mmsa.media.speech import speak

RATE = 16_000
FPS = 15
WIDTH, HEIGHT = 320, 240
SEED = 7
NOISE = 0.002  # room noise, about -54 dBFS
POSITIVE = (
    "I absolutely loved this film, it was wonderful and moving.",
    "The acting was brilliant, and the music made me so happy.",
    "It was a beautiful, joyful story. I would gladly watch it again.",
)
NEGATIVE = (
    "This was terrible, I hated every boring minute of it.",
    "The plot was stupid, and the acting was awful.",
    "What a horrible waste of time. I am so disappointed.",
)
# Words/minute, gap between words (10 ms units), pitch. Slow, spaced words keep Whisper
# tiny.en close to the script (2 of 56 words wrong at these settings, 12 at espeak's default).
VOICES = {
    "positive": ("-s", "140", "-g", "2", "-p", "60"),
    "negative": ("-s", "125", "-g", "3", "-p", "40"),
}
LEAD, PAUSE, SILENCE, TAIL = 0.8, 0.8, 3.0, 1.0  # seconds
FACE_CENTRE = np.array([225.0, 125.0])  # astronaut face centre, source pixels
FACE_BOX = np.array([[180.0, 72.0], [270.0, 178.0]])  # landmark extent, source pixels
AWAY = np.array([0.0, 290.0])  # camera offset that leaves the face out of frame
PAN = 0.4  # seconds to pan away or back
SCALE = 0.95  # source pixels per output pixel


def build_audio() -> tuple[np.ndarray, list[dict], dict]:
    """The soundtrack, its sentences and the silence stretch (times in seconds)."""
    pieces, sentences, cursor = [np.zeros(round(LEAD * RATE), np.float32)], [], LEAD
    silence = {}
    script = [(text, "positive") for text in POSITIVE] + [(text, "negative") for text in NEGATIVE]
    for index, (text, polarity) in enumerate(script):
        speech = speak(text, VOICES[polarity])
        sentences.append(
            {
                "text": text,
                "polarity": polarity,
                "start": round(cursor, 3),
                "end": round(cursor + len(speech) / RATE, 3),
            }
        )
        cursor += len(speech) / RATE
        gap = TAIL if index == len(script) - 1 else PAUSE
        if index == len(POSITIVE) - 1:
            gap = SILENCE
            silence = {"start": round(cursor, 3), "end": round(cursor + gap, 3)}
        pieces += [speech, np.zeros(round(gap * RATE), np.float32)]
        cursor += round(gap * RATE) / RATE
    audio = np.concatenate(pieces)
    audio += np.random.default_rng(SEED).normal(0, NOISE, len(audio)).astype(np.float32)
    return np.clip(audio, -1, 1), sentences, silence


def camera(t: float, away_from: float, away_to: float) -> np.ndarray:
    """2x3 affine map from output to source pixels: a slow drift, and the pan away."""
    ramp = np.clip(min(t - away_from, away_to - t) / PAN, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: the pan eases in and out
    centre = FACE_CENTRE + [6 * np.sin(0.9 * t), 4 * np.sin(1.3 * t + 1)] + ramp * AWAY
    scale = SCALE * (1 + 0.04 * np.sin(0.5 * t))
    angle = np.deg2rad(2.0 * np.sin(0.7 * t))
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    offset = centre - rotation @ [WIDTH / 2, HEIGHT / 2]
    return np.hstack([rotation, offset[:, None]])


def face_visible(matrix: np.ndarray) -> bool:
    """Whether any part of the face's box falls inside the output frame."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = [[x, y] for x in FACE_BOX[:, 0] for y in FACE_BOX[:, 1]]
    points = np.array(corners) @ inverse[:, :2].T + inverse[:, 2]
    inside_x = points[:, 0].max() > 0 and points[:, 0].min() < WIDTH
    inside_y = points[:, 1].max() > 0 and points[:, 1].min() < HEIGHT
    return bool(inside_x and inside_y)


def write_clip(path: Path, audio: np.ndarray, away: tuple[float, float]) -> dict:
    """Encode the clip; returns the stretch during which no part of the face is in view."""
    image = data.astronaut()
    frames = int(np.ceil(len(audio) / RATE * FPS))
    hidden = []
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "30", "preset": "slow", "threads": "1"}
        sound = container.add_stream("aac", rate=RATE, layout="mono")
        sound.bit_rate = 32_000
        for index in range(frames):
            t = index / FPS
            matrix = camera(t, *away)
            if not face_visible(matrix):
                hidden.append(t)
            picture = cv2.warpAffine(
                image,
                matrix,
                (WIDTH, HEIGHT),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        block = 1024
        for start in range(0, len(audio), block):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + block], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = RATE, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    return {"start": round(hidden[0], 3), "end": round(hidden[-1] + 1 / FPS, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "stream_mmsa/samples"
    )
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    audio, sentences, silence = build_audio()
    pan_sentence = sentences[len(POSITIVE) + 1]  # the face leaves during a negative sentence
    away = (pan_sentence["start"] - 0.6, pan_sentence["start"] + 2.9)
    no_face = write_clip(out / "sample.mp4", audio, away)
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    truth = {
        "file": "sample.mp4",
        "made_by": "scripts/make_sample.py",
        "duration": round(len(audio) / RATE, 3),
        "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "codec": "h264"},
        "audio": {"sample_rate": RATE, "channels": 1, "codec": "aac"},
        "face": "skimage.data.astronaut(), smiling throughout; camera drifts, zooms, tilts",
        "voice": {
            "engine": espeak.split("Data at")[0].strip(),
            "settings": {polarity: " ".join(flags) for polarity, flags in VOICES.items()},
        },
        "sentences": sentences,
        "no_face": [no_face],
        "silence": [silence],
    }
    (out / "sample.json").write_text(json.dumps(truth, indent=2) + "\n")
    size = (out / "sample.mp4").stat().st_size / 1e6
    print(f"wrote {out}/sample.mp4 ({size:.2f} MB, {truth['duration']} s) and sample.json")


if __name__ == "__main__":
    main()
