"""Fixtures of mmplug-image's tests: images and random ResNet state dicts made on the spot."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

StateDictFactory = Callable[..., dict[str, Tensor]]


def _noise(size: tuple[int, int] = (48, 32), seed: int = 0) -> Image.Image:
    data = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data)


@pytest.fixture
def noise_image() -> Callable[..., Image.Image]:
    """``noise_image((w, h), seed)``: random RGB pixels; they compress badly, so a saved file
    has plenty of bytes to cut."""
    return _noise


@pytest.fixture
def image_file(tmp_path: Path) -> Callable[..., Path]:
    """``image_file("a.png", image)`` saves ``image`` (default: 48x32 noise) in ``tmp_path``."""

    def save(name: str, image: Image.Image | None = None, **options: object) -> Path:
        path = tmp_path / name
        (image if image is not None else _noise()).save(path, **options)
        return path

    return save


@pytest.fixture(scope="session")
def random_state_dict() -> StateDictFactory:
    """``random_state_dict("resnet18", seed)``: torchvision's network with random weights *and*
    random BatchNorm statistics (the defaults, 0 and 1, would hide a statistics mix-up).

    Each call returns a fresh copy, so a test may edit it; the network is built once per
    ``(arch, seed)`` because random init dominates the cost.
    """
    from torchvision.models import get_model

    made: dict[tuple[str, int], dict[str, Tensor]] = {}

    def make(arch: str = "resnet18", seed: int = 0) -> dict[str, Tensor]:
        if (arch, seed) not in made:
            torch.manual_seed(seed)
            net = get_model(arch, weights=None)
            with torch.no_grad():
                for module in net.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        assert module.running_mean is not None
                        assert module.running_var is not None
                        module.running_mean.normal_(0.0, 0.1)
                        module.running_var.uniform_(0.5, 2.0)
                        module.weight.normal_(1.0, 0.1)
                        module.bias.normal_(0.0, 0.1)
            made[arch, seed] = net.state_dict()
        return {key: value.clone() for key, value in made[arch, seed].items()}

    return make
