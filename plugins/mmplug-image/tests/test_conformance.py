"""mmplug's conformance kit over everything mmplug-image registers: every ResNet, and
variants that take other code paths (augmentation, partly frozen stages)."""

from __future__ import annotations

from mmplug.testing import Check, Conformance


def _images() -> list[object]:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((48, 40))
    noise = Image.effect_noise((30, 52), 64).convert("RGB")
    return [noise, gradient, Image.merge("RGB", [gradient, gradient.rotate(90), gradient])]


conformance = Conformance(
    "mmplug-image",
    samples={"image": _images},
    # small inputs keep the checks fast; the architectures are as registered
    params={f"resnet{depth}": {"image_size": 32} for depth in (18, 34, 50, 101, 152)},
    variants={"resnet18": [{"trainable_stages": 1}, {"augment": True}]},
    skip_variants={
        f"resnet{depth}": {
            "augment": "preprocessing only, the same at every depth: resnet18's variant has it"
        }
        for depth in (34, 50, 101, 152)
    },
    bad_values={"image": [b"not an image", "/no/such/image.png"]},
)


@conformance.parametrize()
def test_conformance(check: Check) -> None:
    check()
