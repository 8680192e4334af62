"""mel-cnn: padding and batch composition never change a clip's features; crops; freezing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmplug
from mmplug import EncoderOutput
from mmplug_audio.melcnn import MelCNNEncoder
from mmplug_audio.modality import AudioModality, Waveform

SMALL = {"n_mels": 16, "channels": [4, 8], "output_dim": 12}


def noise(seconds: float, rate: int, seed: int, channels: int = 1) -> Waveform:
    generator = torch.Generator().manual_seed(seed)
    samples = 0.1 * torch.randn(channels, round(seconds * rate), generator=generator)
    return Waveform(samples, rate)


def test_same_clip_alone_or_padded_beside_a_longer_one(write_tone) -> None:
    torch.manual_seed(0)
    encoder = MelCNNEncoder().eval()
    modality = AudioModality()
    short = modality.load(write_tone("short.flac", 22050, seconds=0.6, channels=2))
    long = modality.load(write_tone("long.wav", 44100, seconds=2.3, hz=1000))

    with torch.no_grad():
        alone = encoder(encoder.preprocess([short]))
        batch = encoder.preprocess([long, short])
        together = encoder(batch)

    assert batch["frames"][1] < batch["frames"][0]  # the short clip really is padded
    torch.testing.assert_close(together.pooled[1:], alone.pooled)
    assert alone.tokens is not None and together.tokens is not None and together.mask is not None
    frames = alone.tokens.shape[1]
    torch.testing.assert_close(together.tokens[1:, :frames], alone.tokens)
    assert together.mask[1].tolist() == [True] * frames + [False] * (
        together.mask.shape[1] - frames
    )


@settings(max_examples=8, deadline=None)
@given(
    clips=st.lists(
        st.tuples(st.floats(0.001, 1.0), st.sampled_from([8000, 16000, 22050, 44100])),
        min_size=1,
        max_size=4,
    )
)
def test_each_clip_is_independent_of_its_batch(clips: list[tuple[float, int]]) -> None:
    torch.manual_seed(0)
    encoder = MelCNNEncoder(**SMALL).eval()
    waves = [noise(seconds, rate, seed) for seed, (seconds, rate) in enumerate(clips)]
    with torch.no_grad():
        together = encoder(encoder.preprocess(waves)).pooled
        alone = torch.cat([encoder(encoder.preprocess([wave])).pooled for wave in waves])
    torch.testing.assert_close(together, alone)


def test_shapes_and_masks() -> None:
    encoder = MelCNNEncoder(**SMALL, hop_length=160)
    batch = encoder.preprocess([noise(1.0, 16000, 0), noise(0.25, 8000, 1)])
    assert batch["mel"].shape == (2, 16, 101)  # 1 + 16000 // 160
    assert batch["frames"].tolist() == [101, 26]
    assert (batch["mel"][1, :, 26:] == 0).all()

    out = encoder(batch)
    assert isinstance(out, EncoderOutput)
    assert out.pooled.shape == (2, 12) and encoder.output_dim == 12
    assert out.tokens is not None and out.mask is not None
    assert out.tokens.shape == (2, math.ceil(101 / 4), 12)  # two blocks, each halves time
    assert out.mask.sum(dim=1).tolist() == [math.ceil(101 / 4), math.ceil(26 / 4)]
    assert (out.tokens[~out.mask] == 0).all()


def test_long_clips_are_cropped_at_the_centre_in_eval_and_at_random_in_training() -> None:
    encoder = MelCNNEncoder(**SMALL, max_seconds=0.5)
    clip = noise(3.0, 16000, 0)
    centre = encoder.preprocess([clip])["mel"]
    assert centre.shape[-1] == 1 + 8000 // 160
    torch.testing.assert_close(encoder.preprocess([clip])["mel"], centre)  # deterministic
    middle = Waveform(clip.samples[:, 20000:28000], 16000)  # (48000 - 8000) // 2 = 20000
    torch.testing.assert_close(encoder.preprocess([middle])["mel"], centre)

    torch.manual_seed(1)
    first = encoder.preprocess([clip], train=True)["mel"]
    second = encoder.preprocess([clip], train=True)["mel"]
    assert first.shape == centre.shape
    assert not torch.equal(first, second)


def test_tiny_clips_still_give_one_frame() -> None:
    encoder = MelCNNEncoder(**SMALL)
    out = encoder(encoder.preprocess([noise(0.0001, 16000, 0)]))  # 2 samples
    assert out.mask is not None and out.mask.sum().item() == 1


def test_freeze_leaves_nothing_trainable_and_stays_in_eval() -> None:
    encoder = MelCNNEncoder(**SMALL, freeze=True)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())

    trainable = MelCNNEncoder(**SMALL).train()
    assert trainable.training
    assert all(p.requires_grad for p in trainable.parameters())


def test_follows_the_model_dtype() -> None:
    encoder = MelCNNEncoder(**SMALL).double()
    out = encoder(encoder.preprocess([noise(0.3, 16000, 0)]))
    assert out.pooled.dtype == torch.float64


def test_a_model_built_from_a_config_trains_on_files(model_host, write_tone) -> None:
    folder: Path = write_tone("a.ogg", 8000, seconds=0.4).parent
    write_tone("b.wav", 44100, seconds=1.1, channels=2)
    config = {
        "model": {
            "encoders": {"sound": {"name": "mel-cnn", "n_mels": 32, "channels": [8, 16]}},
            "fusion": {"name": "pooled"},
            "head": {"name": "linear"},
        }
    }
    model = mmplug.build_model(config, registry=model_host.registry)
    rows = [{"sound": "a.ogg"}, {"sound": "b.wav"}, {"sound": None}]
    pipeline = mmplug.Pipeline.from_model(model)
    batch = pipeline.collate([pipeline.load(r, root=folder) for r in rows], train=True)
    assert batch.present["sound"].tolist() == [True, True, False]

    out = model(batch)
    assert out.logits.shape == (3, 1)
    model.head.loss(out.logits, torch.tensor([0.0, 1.0, 0.0])).backward()
    encoder = model.encoders["sound"]
    assert isinstance(encoder, MelCNNEncoder) and encoder.output_dim == 256
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_mels": 300}, "frequency bins"),
        ({"channels": []}, "at least 1"),
        ({"max_seconds": 0}, "greater than 0"),
        ({"sample_rate": 16000, "dim": 3}, "Extra inputs"),
    ],
)
def test_params_are_validated(params, message) -> None:
    from pydantic import ValidationError

    from mmplug_audio import MelCNNParams

    with pytest.raises(ValidationError, match=message):
        MelCNNParams(**params)


def test_stereo_is_mixed_to_mono() -> None:
    encoder = MelCNNEncoder(**SMALL)
    left = noise(0.5, 16000, 0).samples
    stereo = Waveform(torch.cat([left, torch.zeros_like(left)]), 16000)
    half = Waveform(left * 0.5, 16000)
    mixed = encoder.preprocess([stereo])["mel"]
    torch.testing.assert_close(mixed, encoder.preprocess([half])["mel"])
    assert np.isfinite(mixed.numpy()).all()


def test_unloaded_values_are_rejected() -> None:
    encoder = MelCNNEncoder(**SMALL)
    with pytest.raises(mmplug.DataError, match="clip 0 is a str"):
        encoder.preprocess(["tone.wav"])
    # Python callers may pass (array, rate) pairs directly.
    assert encoder.preprocess([(np.zeros(1600, dtype=np.float32), 16000)])["frames"].tolist() == [
        11
    ]


def test_preprocess_does_not_follow_the_module_to_another_device() -> None:
    # The log-mel front end is not a submodule: .to(device) leaves it on the CPU, where
    # preprocess runs in data-loader workers.
    encoder = MelCNNEncoder(**SMALL).to("meta")
    batch = encoder.preprocess([noise(0.3, 16000, 0)])
    assert batch["mel"].device.type == "cpu"
