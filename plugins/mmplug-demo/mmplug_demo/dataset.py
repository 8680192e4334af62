"""A synthetic text + image + audio classification dataset for ``mmplug demo``, made offline.

Each sample has three independent, uniformly drawn latent bits, one per modality:

- mood (text): the caption's adjective is from a calm set or an alert set;
- shape (image): the picture shows one circle or one square;
- pitch (audio): the clip is a low (200-400 Hz) or a high (1200-2000 Hz) tone.

The label is ``f"{mood}-{shape}-{pitch}"``, one of 8 classes. Any single modality fixes only
one of the three bits, so a unimodal model can reach at most 0.25 accuracy (chance is 0.125),
two modalities at most 0.5, and only a model that fuses all three can reach 1.0. Captions also
carry distractor words about shapes and sounds ("round", "boxy", "humming", "high") drawn
independently of the label, so the text can't leak the other modalities' bits.

Everything is drawn from ``random.Random`` and ``torch.Generator`` instances seeded from
``seed`` and the split name, never from global RNG state: the same seed writes byte-identical
files, and a split's samples don't depend on the other splits' sizes.
"""

from __future__ import annotations

import json
import math
import random
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from mmplug import ConfigError

if TYPE_CHECKING:
    import torch

MOODS = ("calm", "alert")
SHAPES = ("circle", "square")
PITCHES = ("low", "high")
#: The 8 class names, ``"{mood}-{shape}-{pitch}"``, sorted.
CLASSES: list[str] = sorted(f"{m}-{s}-{p}" for m in MOODS for s in SHAPES for p in PITCHES)

_ADJECTIVES = {
    "calm": ("calm", "quiet", "gentle", "peaceful", "sleepy", "relaxed", "serene", "soft"),
    "alert": ("loud", "urgent", "alarmed", "frantic", "noisy", "hectic", "tense", "restless"),
}
_NOUNS = ("dog", "cat", "crowd", "kettle", "bird", "child", "engine", "horse", "clock", "baby")
_VERBS = ("waits", "rests", "moves", "sits", "wanders", "turns", "stands", "watches")
_PLACES = ("in the kitchen", "by the river", "at the station", "on the street", "in the park")
_DISTRACTORS = ("round", "square", "boxy", "pointy", "ringing", "humming", "buzzing", "high", "low")
_TEMPLATES = (
    "the {adj} {noun} {verb} {place}",
    "{place} the {adj} {noun} {verb}",
    "there is one {adj} {noun} {place}",
    "the {noun} {verb} {place} and seems {adj}",
)
_PITCH_HZ = {"low": (200.0, 400.0), "high": (1200.0, 2000.0)}


@dataclass(frozen=True)
class DemoData:
    """Where :func:`generate` wrote the dataset.

    Args:
        root: the output folder; manifest paths are relative to it.
        train: the training manifest (JSONL: id, caption, image, audio, label).
        val: the validation manifest.
        test: the test manifest.
        classes: the class names, sorted (:data:`CLASSES`).
    """

    root: Path
    train: Path
    val: Path
    test: Path
    classes: list[str]


def generate(
    out: str | Path,
    *,
    train: int = 640,
    val: int = 160,
    test: int = 160,
    seed: int = 0,
    image_size: int = 64,
    sample_rate: int = 16000,
    seconds: float = 0.5,
) -> DemoData:
    """Write the dataset to ``out``: ``images/{id}.png``, ``audio/{id}.wav`` and one manifest
    ``{split}.jsonl`` per split, with ids such as ``train-0001``. Existing files are replaced.

    Args:
        out: the output folder, created if missing.
        train: number of training samples; ``val`` and ``test`` likewise.
        seed: the same seed gives byte-identical files.
        image_size: images are RGB, ``image_size`` x ``image_size`` pixels.
        sample_rate: audio sample rate in Hz; must exceed 4000 (the highest tone is 2000 Hz).
        seconds: clip length; clips are mono 16-bit PCM.

    Raises:
        ConfigError: a count is negative, or a size, rate or length is too small.
    """
    import torch

    if min(train, val, test) < 0:
        raise ConfigError(f"demo sample counts must be >= 0, got {train}/{val}/{test}")
    if image_size < 16:
        raise ConfigError(f"demo image_size must be >= 16, got {image_size}")
    if sample_rate <= 2 * _PITCH_HZ["high"][1]:
        raise ConfigError(f"demo sample_rate must be > 4000 Hz, got {sample_rate}")
    if round(seconds * sample_rate) < 1:
        raise ConfigError(f"demo clips must hold at least one sample, got {seconds} s")
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    manifests: dict[str, Path] = {}
    for split, count in (("train", train), ("val", val), ("test", test)):
        rng = random.Random(f"mmplug-demo:{seed}:{split}")
        gen = torch.Generator().manual_seed(rng.getrandbits(63))
        lines = []
        for i in range(count):
            sid = f"{split}-{i + 1:04d}"
            mood, shape, pitch = rng.choice(MOODS), rng.choice(SHAPES), rng.choice(PITCHES)
            image, audio = f"images/{sid}.png", f"audio/{sid}.wav"
            caption = _caption(rng, mood)
            _image(rng, gen, shape, image_size).save(root / image)
            _write_wav(root / audio, _tone(rng, gen, pitch, sample_rate, seconds), sample_rate)
            label = f"{mood}-{shape}-{pitch}"
            row = {"id": sid, "caption": caption, "image": image, "audio": audio, "label": label}
            lines.append(json.dumps(row) + "\n")
        manifests[split] = root / f"{split}.jsonl"
        manifests[split].write_text("".join(lines), encoding="utf-8")
    return DemoData(root, manifests["train"], manifests["val"], manifests["test"], list(CLASSES))


def _caption(rng: random.Random, mood: str) -> str:
    # 0-2 distractors before the noun, independent of every label bit.
    distractors = rng.sample(_DISTRACTORS, rng.choice((0, 0, 1, 1, 2)))
    return rng.choice(_TEMPLATES).format(
        adj=rng.choice(_ADJECTIVES[mood]),
        noun=" ".join([*distractors, rng.choice(_NOUNS)]),
        verb=rng.choice(_VERBS),
        place=rng.choice(_PLACES),
    )


def _image(rng: random.Random, gen: torch.Generator, shape: str, size: int) -> Image.Image:
    import torch

    # Any hue, but the shape is always lighter than the background: a network trained from
    # scratch on a few hundred images then learns the outline within an epoch or two, while
    # fully random colours (a dark shape on a light ground half the time) take many more.
    background = (rng.randrange(100), rng.randrange(100), rng.randrange(100))
    fill = (rng.randrange(150, 256), rng.randrange(150, 256), rng.randrange(150, 256))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    half = rng.uniform(0.35, 0.65) * size / 2  # radius, or half the square's side
    limit = size - 1  # PIL's shape boxes include their far edge
    cx, cy = rng.uniform(half, limit - half), rng.uniform(half, limit - half)
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.rectangle(box, fill=fill)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).to(torch.int16)
    pixels += torch.randint(-12, 13, pixels.shape, generator=gen, dtype=torch.int16)
    noisy = pixels.clamp(0, 255).to(torch.uint8).numpy().tobytes()
    return Image.frombytes("RGB", (size, size), noisy)


def _tone(
    rng: random.Random, gen: torch.Generator, pitch: str, sample_rate: int, seconds: float
) -> torch.Tensor:
    """A faded sine at a random frequency of the pitch band plus white noise; ``[N]`` float32."""
    import torch

    n = round(seconds * sample_rate)
    amplitude = rng.uniform(0.3, 0.8)
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    phase = rng.uniform(0.0, 2 * math.pi)
    signal = amplitude * torch.sin(2 * math.pi * rng.uniform(*_PITCH_HZ[pitch]) * t + phase)
    fade = min(n // 2, round(rng.uniform(0.005, 0.03) * sample_rate))
    if fade:
        ramp = torch.linspace(0.0, 1.0, fade, dtype=torch.float32)
        signal[:fade] *= ramp
        signal[n - fade :] *= ramp.flip(0)
    snr_db = rng.uniform(10.0, 15.0)  # against the steady tone's power, amplitude**2 / 2
    noise_std = amplitude / math.sqrt(2) / 10 ** (snr_db / 20)
    signal += noise_std * torch.randn(n, generator=gen, dtype=torch.float32)
    peak = float(signal.abs().max())
    return signal / peak if peak > 1.0 else signal  # rescale rather than clip


def _write_wav(path: Path, signal: torch.Tensor, sample_rate: int) -> None:
    import torch

    pcm = (signal * 32767).round().to(torch.int16).numpy().astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(sample_rate)
        file.writeframes(pcm.tobytes())
