"""A real-data audio-visual benchmark, built from data that packages ship: AV-digits.

Each example pairs one of scikit-learn's bundled handwritten digits (1,797 scans of 8x8
pixels, 16 grey levels, written by 43 people) with a spoken name of the same digit ("seven"),
synthesized by espeak-ng (a Debian package) in one of several voices, speeds and pitches.
Both are degraded, in the style of the AV-MNIST benchmark (MultiBench, Liang et al. 2021),
so that neither modality alone is near perfect:

- image: upscaled to 32x32, an occluding block over part of the digit, pixel noise;
- audio: the clip shifted in a 1 s window, mixed with loud white noise (SNR drawn per row).

The voices of the training, validation and test clips are disjoint (the test speaks in voices
the model never heard), as the writers are in the original digits: nobody here wrote this
data, and nothing about it is built so that one method wins.

Writes ``images/*.png``, ``audio/*.wav``, ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and
``config.yaml`` (a fused image+audio model) into ``--out``. Same seed, same files.

Usage::

    python benchmarks/av_digits.py --out /tmp/av-digits [--seed 0]

Needs ``scikit-learn`` (``pip install -e '.[bench]'``) and ``espeak-ng`` (``apt-get install
espeak-ng``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: espeak-ng voice (+ variant) per split; the splits never share a voice.
VOICES = {
    "train": ["en-us", "en-gb", "en-gb-scotland+f3", "en-029+m3", "en-gb-x-rp+f2", "en-us+m7"],
    "val": ["en-gb-x-gbclan+f4", "en-us+f1"],
    "test": ["en-gb-x-gbcwmd+m2", "en-gb+f5"],
}
SPEEDS = (130, 175, 220)  # words per minute
PITCHES = (35, 65)
SPLIT_SHARES = {"train": 0.6, "val": 0.2}  # the rest is test
SAMPLE_RATE = 16_000
WINDOW_SECONDS = 1.0
IMAGE_SIZE = 32
OCCLUSION = 16  # side of the occluding block, in pixels of the 32x32 image
PIXEL_NOISE = 0.45
SNR_DB = (-3.0, 3.0)

CONFIG = """\
# AV-digits (benchmarks/av_digits.py): handwritten digits + spoken digit names, both degraded.
model:
  encoders:
    image: {name: resnet18, image_size: 32}
    audio: {name: mel-cnn, max_seconds: 1.0, n_mels: 40, channels: [16, 32, 64], output_dim: 64}
  fusion: {name: concat, dim: 64}
  head: {name: classification, hidden_dims: [64]}
data:
  train: train.jsonl
  val: val.jsonl
  test: test.jsonl
train:
  epochs: 12
  batch_size: 32
  lr: 0.002
  monitor: val_accuracy
"""


def synthesize(word: str, voice: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    """One spoken word at :data:`SAMPLE_RATE`, as float32 in [-1, 1]."""
    import soundfile  # type: ignore[import-untyped]
    import torch
    import torchaudio

    path = folder / "clip.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
        check=True,
        capture_output=True,
    )
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(samples.T.mean(axis=0, keepdims=True))
    wave = torchaudio.functional.resample(wave, rate, SAMPLE_RATE)[0].numpy()
    return wave / max(float(np.abs(wave).max()), 1e-6)


def clip_bank(folder: Path) -> dict[str, list[list[np.ndarray]]]:
    """Per split, per digit, every clip of that split's voices, speeds and pitches."""
    bank: dict[str, list[list[np.ndarray]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for split, voices in VOICES.items():
            bank[split] = [
                [
                    synthesize(word, voice, speed, pitch, Path(scratch))
                    for voice in voices
                    for speed in SPEEDS
                    for pitch in PITCHES
                ]
                for word in WORDS
            ]
    return bank


def degrade_image(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8x8 digit in 0..16 -> 32x32 uint8 with an occluding block and noise."""
    scale = IMAGE_SIZE // 8
    image = np.kron(pixels / 16.0, np.ones((scale, scale)))
    top, left = rng.integers(0, IMAGE_SIZE - OCCLUSION + 1, size=2)
    image[top : top + OCCLUSION, left : left + OCCLUSION] = rng.uniform(0.0, 1.0)
    image = image + rng.normal(0.0, PIXEL_NOISE, image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def degrade_audio(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clip placed at a random offset of the window, under white noise at a random SNR."""
    length = int(WINDOW_SECONDS * SAMPLE_RATE)
    clip = clip[:length]
    wave = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - len(clip) + 1))
    wave[start : start + len(clip)] = clip * rng.uniform(0.3, 1.0)
    signal_power = float(np.mean(clip**2)) * (len(clip) / length)
    snr = rng.uniform(*SNR_DB)
    noise = rng.normal(0.0, np.sqrt(signal_power / 10 ** (snr / 10)), length)
    wave = wave + noise.astype(np.float32)
    return np.clip(wave / max(float(np.abs(wave).max()), 1e-6), -1.0, 1.0)


def split_of(labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """A split per example, stratified by digit."""
    splits = [""] * len(labels)
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        first = round(len(rows) * SPLIT_SHARES["train"])
        second = first + round(len(rows) * SPLIT_SHARES["val"])
        for position, row in enumerate(rows):
            splits[row] = "train" if position < first else "val" if position < second else "test"
    return splits


def generate(out: Path, seed: int = 0) -> dict[str, int]:
    """Write the benchmark into ``out``; returns the row count per split."""
    import soundfile
    from PIL import Image
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    bank = clip_bank(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)
    rows: dict[str, list[dict[str, object]]] = {split: [] for split in VOICES}
    for index, split in enumerate(split_of(digits.target, rng)):
        digit = int(digits.target[index])
        name = f"{index:04d}"
        image = degrade_image(digits.images[index], rng)
        Image.fromarray(image, mode="L").convert("RGB").save(out / "images" / f"{name}.png")
        clips = bank[split][digit]
        wave = degrade_audio(clips[int(rng.integers(len(clips)))], rng)
        soundfile.write(str(out / "audio" / f"{name}.wav"), wave, SAMPLE_RATE, subtype="PCM_16")
        rows[split].append(
            {"image": f"images/{name}.png", "audio": f"audio/{name}.wav", "label": str(digit)}
        )
    for split, lines in rows.items():
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
    (out / "config.yaml").write_text(CONFIG, encoding="utf-8")
    return {split: len(lines) for split, lines in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = generate(args.out, args.seed)
    shown = ", ".join(f"{count} {split}" for split, count in counts.items())
    print(f"AV-digits in {args.out}: {shown} rows; config {args.out / 'config.yaml'}")


if __name__ == "__main__":
    main()
