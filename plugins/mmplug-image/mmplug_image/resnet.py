"""ResNet feature encoders on torchvision's ResNet-18/34/50/101/152.

The classifier (``fc``) is removed: the encoder returns features, not class logits.

- ``pooled``: the global-average-pooled last stage, ``[n, C]`` (``C`` = 512 for ResNet-18/34,
  2048 for ResNet-50/101/152).
- ``tokens``: the last stage's spatial positions as a sequence, ``[n, H*W, C]`` with an
  all-true mask ``[n, H*W]``; ``H = W = ceil(image_size / 32)``, so 49 tokens at 224 px.

Weights are a torchvision weights name, a local state dict file, or ``None`` (random).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.models import ResNet, get_model, get_model_weights  # type: ignore[import-untyped]
from torchvision.transforms import v2  # type: ignore[import-untyped]

from mmplug import (
    ComponentError,
    DataError,
    Encoder,
    EncoderOutput,
    load_checked,
    read_state_dict,
    strip_prefix,
)
from mmplug_image import RESNETS
from mmplug_image.modality import to_rgb

#: ImageNet statistics, used by every torchvision ResNet weights and so the default for a
#: local weights file, which carries no preprocessing metadata.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The four stages, in order; ``trainable_stages: N`` trains the last N.
STAGES = ("layer1", "layer2", "layer3", "layer4")
_STEM = ("conv1", "bn1")

#: File suffixes that make a ``weights`` string a path even if no such file exists, so that
#: a typo in a path says "file not found" rather than "unknown weights name".
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

#: Blocks per stage -> architecture, to say what a mismatched state dict looks like.
_DEPTHS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


class ResNetEncoder(Encoder):
    """A torchvision ResNet without its classifier, as an ``image`` encoder.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``resnet152``.
        weights: a torchvision weights name of ``arch`` (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
            ``DEFAULT``; read from the torch hub cache, downloaded there if missing), a path
            to a state dict (``.safetensors``, or any other file read by ``torch.load`` with
            ``weights_only=True``), or ``None`` for random initialization. A relative path
            resolves against the working directory. Keys of the classifier (``fc.*``) are
            ignored; a ``module.`` prefix on every key (``DataParallel``) is removed.
        image_size: side ``S`` of the square crop the network sees.
        augment: with ``preprocess(train=True)``, random resized crop and horizontal flip
            instead of resize and center crop.
        freeze: no gradients for any parameter, and every BatchNorm keeps its running
            statistics, even in ``train()`` mode.
        trainable_stages: train only the last N (0 to 4) of the four stages; the stem and the
            other stages are frozen as with ``freeze``. ``None`` trains everything.

    Raises:
        ValueError: an unknown ``arch``, or an invalid combination of arguments.
        ComponentError: ``weights`` can't be used (unknown name, missing or unreadable file,
            a state dict that does not fit ``arch``, no network and no cached file).
    """

    modality = "image"

    def __init__(
        self,
        arch: str,
        *,
        weights: str | None = None,
        image_size: int = 224,
        augment: bool = False,
        freeze: bool = False,
        trainable_stages: int | None = None,
    ):
        super().__init__()
        if arch not in RESNETS:
            raise ValueError(f"unknown ResNet {arch!r}; one of {', '.join(RESNETS)}")
        if freeze and trainable_stages is not None:
            raise ValueError("give either freeze=True or trainable_stages=N, not both")
        if trainable_stages is not None and not 0 <= trainable_stages <= len(STAGES):
            raise ValueError(f"trainable_stages must be 0 to 4, got {trainable_stages}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.arch = arch
        self.weights = weights
        self.image_size = image_size
        self.augment = augment
        self.deterministic_preprocess = not augment  # frozen and not augmenting: cacheable
        self.freeze = freeze
        self.trainable_stages = trainable_stages
        self.output_dim = RESNETS[arch]

        # Weights are read first: a bad file or name fails before seconds of random init.
        stats: _Stats = (IMAGENET_MEAN, IMAGENET_STD)
        state = None
        if weights is not None:
            state, source, known = _read_weights(arch, weights)
            stats = known or stats
        self.mean, self.std = tuple(stats[0]), tuple(stats[1])
        self.backbone: ResNet = get_model(arch, weights=None)
        # Replaced before loading weights: the classifier's keys are then simply not expected,
        # so a state dict fine-tuned for any number of classes fits.
        self.backbone.fc = nn.Identity()
        if state is not None:
            _load_state(self.backbone, state, arch, source)

        frozen: tuple[str, ...] = ()
        if trainable_stages is not None and not freeze:
            frozen = (*_STEM, *STAGES[: len(STAGES) - trainable_stages])
        if freeze:  # the whole encoder, in eval mode for good: its outputs can be cached
            self.freeze_modules()
        elif frozen:  # their BatchNorm statistics stay fixed too
            self.freeze_modules(*(f"backbone.{name}" for name in frozen))
        self._preprocessor = ImagePreprocessor(image_size, self.mean, self.std, augment)

    def preprocess(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Resize, crop and normalize images (see :class:`ImagePreprocessor`)."""
        return self._preprocessor(raws, train=train)

    def preprocessor(self) -> ImagePreprocessor:
        """The transforms, without the network's weights."""
        return self._preprocessor

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        """Encode preprocessed images.

        Args:
            inputs: ``{"pixels": [n, 3, S, S]}`` from :meth:`preprocess`.

        Returns:
            ``pooled`` ``[n, C]``; ``tokens`` ``[n, H*W, C]`` (``H = W = ceil(S / 32)``) and an
            all-true ``mask`` ``[n, H*W]``.
        """
        net = self.backbone
        pixels = inputs["pixels"].to(net.conv1.weight.dtype)  # follows model.to(float64)
        x = net.maxpool(net.relu(net.bn1(net.conv1(pixels))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))  # [n, C, H, W]
        pooled = torch.flatten(net.avgpool(x), 1)  # as torchvision computes it, bit for bit
        tokens = x.flatten(2).transpose(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)

    def extra_repr(self) -> str:
        frozen = "all" if self.freeze else self.trainable_stages
        return (
            f"arch={self.arch!r}, weights={self.weights!r}, image_size={self.image_size}, "
            f"augment={self.augment}, frozen={frozen!r}"
        )


class ImagePreprocessor:
    """Resizes, crops and normalizes a batch of images for a ResNet.

    Evaluation: resize the short side to ``S``, then center-crop ``S x S``. Training with
    ``augment``: a random resized crop and a horizontal flip.

    Args:
        image_size: ``S``.
        mean: per-channel means of the weights' training data.
        std: per-channel standard deviations.
        augment: augment when called with ``train=True``.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
    ) -> None:
        self.image_size = image_size
        self.augment = augment
        self.transforms = {
            train: v2.Compose(
                [
                    v2.ToImage(),  # uint8 [3, h, w]: resizing uint8 is cheaper than float
                    *_geometry(image_size, train=train),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(mean=list(mean), std=list(std)),
                ]
            )
            for train in (False, True)
        }

    def __call__(self, raws: list[Any], *, train: bool = False) -> dict[str, Tensor]:
        """Transform images.

        Args:
            raws: ``n`` PIL images, as the ``image`` modality loads them (other modes than
                RGB are converted).
            train: with ``augment``, random resized crop and horizontal flip.

        Returns:
            ``{"pixels": [n, 3, S, S]}``, float32, normalized with the weights' statistics.
        """
        transform = self.transforms[train and self.augment]
        pixels = [transform(_rgb(raw, index)).as_subclass(Tensor) for index, raw in enumerate(raws)]
        if not pixels:
            return {"pixels": torch.empty(0, 3, self.image_size, self.image_size)}
        return {"pixels": torch.stack(pixels)}


def _geometry(size: int, *, train: bool) -> list[Any]:
    if train:
        return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    return [v2.Resize(size, antialias=True), v2.CenterCrop(size)]


def _rgb(raw: Any, index: int) -> Image.Image:
    if not isinstance(raw, Image.Image):
        raise DataError(
            f"image {index}: expected a PIL image (as the image modality loads it), "
            f"got {type(raw).__name__}"
        )
    return raw if raw.mode == "RGB" else to_rgb(raw)


# -- weights --------------------------------------------------------------------------------

_Stats = tuple[Sequence[float], Sequence[float]]


def _read_weights(arch: str, weights: str) -> tuple[Mapping[str, Any], str, _Stats | None]:
    """The state dict ``weights`` names, a description of where it came from, and its
    normalization statistics (``None``: not known, use ImageNet's)."""
    path = Path(weights).expanduser()
    looks_like_path = (
        "/" in weights or os.sep in weights or weights.lower().endswith(_FILE_SUFFIXES)
    )
    if looks_like_path or path.is_file():
        return read_state_dict(path), f"weights file {str(path)!r}", None
    return _read_named(arch, weights)


def _read_named(arch: str, weights: str) -> tuple[Mapping[str, Any], str, _Stats | None]:
    enum = get_model_weights(arch)
    members: list[str] = list(enum.__members__)
    # Accept "IMAGENET1K_V2", "imagenet1k_v2" and "ResNet50_Weights.IMAGENET1K_V2".
    bare = weights.removeprefix(f"{enum.__name__}.").upper()
    if bare not in members:
        close = difflib.get_close_matches(bare, members, n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ComponentError(
            f"unknown {arch} weights {weights!r}; {hint}torchvision's {enum.__name__} has "
            f"{', '.join(members)}. For a local file give its path "
            f"(.pth, .pt or .safetensors), e.g. weights: /path/to/{arch}.pth"
        )
    chosen = enum[bare]
    source = f"{arch} weights {chosen.name}"  # DEFAULT is an alias: name what it means
    cached = os.path.join(
        torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(chosen.url).path)
    )
    try:
        state = chosen.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # no network (URLError), a bad hash, a corrupt cached file
        if os.path.isfile(cached):
            problem = f"the cached file {cached} can't be read"
        else:
            problem = (
                f"they are not in the cache ({cached}) and the download from {chosen.url} failed"
            )
        raise ComponentError(
            f"can't load {source}: {problem}: {type(exc).__name__}: {exc}. Without network, "
            f"copy the file to {cached} or give a local file, e.g. weights: /path/to/{arch}.pth"
        ) from exc
    stats = chosen.transforms()
    return state, source, (stats.mean, stats.std)


def _load_state(net: nn.Module, state: Mapping[str, Any], arch: str, source: str) -> None:
    """Load ``state`` into ``net`` (classifier already removed), or list what does not fit."""
    state = strip_prefix(state, "module.")  # saved from a DataParallel
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    load_checked(net, state, source=source, target=arch, hint=_looks_like(state, arch))


def _looks_like(state: Mapping[str, Any], arch: str) -> str:
    """``(it looks like a resnet50 state dict)`` when the block counts say so."""
    blocks: dict[int, set[str]] = {}
    for key in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(match[2])
    depths = tuple(len(blocks.get(stage, ())) for stage in range(1, 5))
    bottleneck = any(".conv3." in key for key in state)
    guess = _DEPTHS.get((depths, bottleneck))
    return f"(it looks like a {guess} state dict)" if guess and guess != arch else ""


# -- factories, one per registered name ------------------------------------------------------


def resnet18(**params: Any) -> ResNetEncoder:
    """ResNet-18 features: pooled ``[n, 512]``, tokens ``[n, H*W, 512]``."""
    return ResNetEncoder("resnet18", **params)


def resnet34(**params: Any) -> ResNetEncoder:
    """ResNet-34 features: pooled ``[n, 512]``, tokens ``[n, H*W, 512]``."""
    return ResNetEncoder("resnet34", **params)


def resnet50(**params: Any) -> ResNetEncoder:
    """ResNet-50 features: pooled ``[n, 2048]``, tokens ``[n, H*W, 2048]``."""
    return ResNetEncoder("resnet50", **params)


def resnet101(**params: Any) -> ResNetEncoder:
    """ResNet-101 features: pooled ``[n, 2048]``, tokens ``[n, H*W, 2048]``."""
    return ResNetEncoder("resnet101", **params)


def resnet152(**params: Any) -> ResNetEncoder:
    """ResNet-152 features: pooled ``[n, 2048]``, tokens ``[n, H*W, 2048]``."""
    return ResNetEncoder("resnet152", **params)
