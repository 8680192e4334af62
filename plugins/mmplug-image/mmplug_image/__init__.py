"""mmplug-image: the ``image`` modality and torchvision ResNet encoders.

This is the entry-point module (``[project.entry-points.mmplug] image = "mmplug_image"``), so it
holds only hookimpls and params models and stays cheap to import: no torch, torchvision or
PIL. The factories are ``"module:attr"`` strings, imported when a model is built:

- :mod:`mmplug_image.modality`: the loader (paths, bytes or ``PIL.Image`` -> RGB image);
- :mod:`mmplug_image.resnet`: the ResNet-18/34/50/101/152 feature encoders.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from mmplug import Params, RegisterFn, hookimpl

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for

#: Pillow's own default of ``Image.MAX_IMAGE_PIXELS`` (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485
#: Wider than any panorama a camera makes (about 10:1), far short of a strip of pixels.
DEFAULT_MAX_ASPECT_RATIO = 50.0

#: Registered encoder name -> feature size of the last stage.
RESNETS: dict[str, int] = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
}


class ImageModalityParams(Params):
    """Parameters of the ``image`` modality."""

    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        description=(
            "Images with more pixels (width x height) are refused before they are decoded, "
            "so a decompression bomb is an error instead of running out of memory."
        ),
    )
    max_aspect_ratio: float = Field(
        default=DEFAULT_MAX_ASPECT_RATIO,
        ge=1,
        allow_inf_nan=False,
        description=(
            "Images whose long side is more than this many times the short side are refused "
            "before they are decoded: resizing the short side up to the encoder's size would "
            "blow a thin strip (1,000,000 x 1 pixels) up to billions of pixels."
        ),
    )


class ResNetParams(Params):
    """Parameters of the ResNet encoders."""

    weights: str | None = Field(
        default=None,
        description=(
            "A torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT; downloaded "
            "into $TORCH_HOME/hub/checkpoints, or read from there offline), a local state dict "
            "(.pth/.pt, or .safetensors), or null for random initialization."
        ),
    )
    image_size: int = Field(
        default=224, ge=32, description="Side of the square crop fed to the network, in pixels."
    )
    augment: bool = Field(
        default=False,
        description="With train=True: random resized crop and horizontal flip.",
    )
    freeze: bool = Field(
        default=False,
        description="No gradients for the whole network; BatchNorm statistics stay fixed.",
    )
    trainable_stages: int | None = Field(
        default=None,
        ge=0,
        le=4,
        description=(
            "Train only the last N of the four stages; the stem and the earlier stages are "
            "frozen (BatchNorm statistics fixed). Null trains everything."
        ),
    )

    @model_validator(mode="after")
    def _freeze_or_stages(self) -> Self:
        # Two ways of saying how much to freeze: refusing both beats a precedence rule that
        # someone has to look up.
        if self.freeze and self.trainable_stages is not None:
            raise ValueError(
                "give either freeze: true (freeze everything) or trainable_stages: N "
                "(freeze all but the last N stages), not both"
            )
        return self


@hookimpl
def register_modalities(register: RegisterFn) -> None:
    register(
        "image",
        "mmplug_image.modality:ImageModality",
        params=ImageModalityParams,
        summary="An image file (path, bytes or PIL image), loaded as RGB with EXIF orientation",
    )


@hookimpl
def register_encoders(register: RegisterFn) -> None:
    for name, dim in RESNETS.items():
        depth = name.removeprefix("resnet")
        register(
            name,
            f"mmplug_image.resnet:{name}",
            params=ResNetParams,
            modality="image",
            summary=f"ResNet-{depth} features (torchvision): pooled {dim}, tokens H*W x {dim}",
        )
