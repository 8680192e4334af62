"""``mmplug new-plugin``: write a complete, installable plugin package from templates.

The package it writes works as written: ``pip install -e`` it and ``mmplug list`` shows its
component, and its test file (mmplug's conformance kit) passes. What it holds depends on the
kind:

- ``encoder`` for modality ``text`` (the default): a hashed bag-of-words encoder for the
  ``text`` modality of ``mmplug-text``;
- ``encoder`` for a modality nothing registers yet, or ``modality``: that modality (a vector
  of numbers) and a perceptron encoder for it;
- ``fusion``: a masked mean of per-modality projections;
- ``head``: classification with the focal loss.

Templates are ``string.Template`` files under ``templates/``: ``$name`` placeholders, ``$$``
for a literal dollar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from mmplug.errors import MmplugError
from mmplug.kinds import KINDS
from mmplug.plugins.hookspecs import API_VERSION
from mmplug.plugins.registry import NAME_PATTERN, Registry

#: Modalities the scaffold can write an encoder for without writing the modality too.
KNOWN_MODALITIES = {"text": "mmplug-text"}


@dataclass(frozen=True)
class Layout:
    """What one kind of package holds.

    Attributes:
        template: the folder under ``templates/`` with its ``__init__`` and component module.
        files: the component module(s) it writes next to ``__init__.py``.
        summary: the package's one-line description.
        components: ``(kind, name, summary)`` rows for the README.
        dependencies: the distributions it needs.
        samples: the conformance kit's samples.
        params: the conformance kit's params.
        example: the README's example ``model`` section.
        modality: the modality its encoder consumes ("" for a fusion or head).
    """

    template: str
    files: tuple[str, ...]
    summary: str
    components: tuple[tuple[str, str, str], ...]
    dependencies: tuple[str, ...]
    samples: dict[str, list[Any]]
    params: dict[str, dict[str, Any]]
    example: str
    modality: str = ""


def new_plugin(
    name: str,
    *,
    kind: str = "encoder",
    modality: str | None = None,
    out: str | Path | None = None,
    registry: Registry,
) -> Path:
    """Write the package ``mmplug-<name>``.

    Args:
        name: the plugin's name (``chars``; a leading ``mmplug-`` is dropped). It names the
            distribution, the module, the entry point and the main component.
        kind: ``encoder``, ``modality``, ``fusion`` or ``head``.
        modality: for an encoder, the modality it consumes (default ``text``).
        out: the folder to create (default ``./mmplug-<name>``); it must not hold anything.
        registry: where to look up whether ``modality`` exists.

    Returns:
        The package folder.

    Raises:
        MmplugError: a bad name, kind or modality, or ``out`` is not empty.
    """
    name = name.removeprefix("mmplug-")
    if not NAME_PATTERN.match(name) or not name[0].isalpha():
        raise MmplugError(
            f"invalid plugin name {name!r}: start with a letter, then lowercase letters, digits, "
            "'-' or '_' (e.g. 'chars', 'point-cloud')"
        )
    if kind not in KINDS:
        raise MmplugError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if modality is not None and kind not in ("encoder", "modality"):
        raise MmplugError(f"--modality is for encoders and modalities, not a {kind}")
    distribution, module = f"mmplug-{name}", f"mmplug_{name.replace('-', '_')}"
    target = Path(out) if out is not None else Path(distribution)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MmplugError(f"{target} already exists and is not empty; choose another --out")
    layout = _layout(name, kind, modality, registry)
    values = {
        "name": layout.components[-1][1],
        "distribution": distribution,
        "module": module,
        "entry": name,
        "modality": layout.modality,
        "Class": _camel(name),
        "ModalityClass": _camel(layout.modality or name) + "Modality",
        "api_version": str(API_VERSION),
        "summary": layout.summary,
        "dependencies": ", ".join(f'"{d}"' for d in layout.dependencies),
        "component_rows": "\n".join(f"| {k} | `{n}` | {w} |" for k, n, w in layout.components),
        "listed": " and ".join(f"`{n}`" for _, n, _ in layout.components),
        "example": layout.example,
        "samples": _literal(layout.samples),
        "params": _literal(layout.params),
    }
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        "tests/test_conformance.py": "test_conformance.py.tmpl",
        f"{module}/__init__.py": f"{layout.template}/__init__.py.tmpl",
        f"{module}/py.typed": None,
        **{f"{module}/{file}": f"{layout.template}/{file}.tmpl" for file in layout.files},
    }
    templates = resources.files("mmplug.scaffold") / "templates"
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "" if template is None else (templates / template).read_text()
        path.write_text(Template(text).substitute(values))
    return target


def _layout(name: str, kind: str, modality: str | None, registry: Registry) -> Layout:
    if kind == "fusion":
        return Layout(
            "fusion",
            ("fusion.py",),
            f"The {name} fusion for mmplug",
            (("fusion", name, "mean of per-modality projections over the present ones"),),
            ("mmplug", "torch"),
            {},
            {},
            _example(f"{{name: {name}, dim: 128}}", fusion=True),
        )
    if kind == "head":
        return Layout(
            "head",
            ("head.py",),
            f"The {name} head for mmplug: classification with the focal loss",
            (("head", name, "single-label classification trained with the focal loss"),),
            ("mmplug", "torch", "torchmetrics"),
            {},
            {name: {"num_classes": 3}},
            _example(f"{{name: {name}, num_classes: 5, gamma: 2.0}}", head=True),
        )
    if kind == "encoder" and (modality or "text") in KNOWN_MODALITIES:
        modality = modality or "text"
        return Layout(
            "encoder_text",
            ("encoder.py",),
            f"The {name} encoder for mmplug's {modality} modality",
            (("encoder", name, "hashed bag-of-words embeddings"),),
            ("mmplug", KNOWN_MODALITIES[modality], "torch"),
            {modality: ["a cat sat on the mat", "", "the quick brown fox jumps over the dog"]},
            {},
            _example(f"{{name: {name}, dim: 64}}", key=modality),
            modality,
        )
    new = modality or name  # --kind modality names the modality after the plugin unless told
    _check_new_modality(new, registry)
    encoder = f"{name}-mlp" if kind == "modality" else name
    return Layout(
        "modality",
        ("modality.py", "encoder.py"),
        f"The {new} modality (a vector of numbers) and its {encoder} encoder for mmplug",
        (
            ("modality", new, "a vector of numbers: a list, or a comma-separated string"),
            ("encoder", encoder, "a perceptron over the vector"),
        ),
        ("mmplug", "torch"),
        {new: [[0.5, 1.0, 2.0], "3,-1,0", [1, 1, 1]]},
        {encoder: {"num_features": 3}},
        _example(f"{{name: {encoder}, num_features: 3}}", key=new),
        new,
    )


def _check_new_modality(modality: str, registry: Registry) -> None:
    """A modality the package would register must not be one that already exists."""
    if not NAME_PATTERN.match(modality):
        raise MmplugError(f"invalid modality name {modality!r}")
    taken = registry.components("modality", modality)
    if taken:
        owner = taken[0].distribution
        known = ", ".join(KNOWN_MODALITIES)
        raise MmplugError(
            f"modality {modality!r} is registered by {owner}; the scaffold writes encoders for "
            f"{known} or for a new modality: pass --modality with a new name, or start from "
            f"--modality text and change the encoder's modality to {modality!r}"
        )


def _example(
    entry: str, *, key: str | None = None, fusion: bool = False, head: bool = False
) -> str:
    """A README example config using the new component."""
    encoders = (
        f"    {key}: {entry}" if key else "    text: {name: bert}\n    image: {name: resnet18}"
    )
    if key and key != "text":
        encoders += "\n    text: {name: bert}"
    fusion_entry = entry if fusion else "{name: gated}"
    head_entry = entry if head else "{name: classification, num_classes: 3}"
    return f"model:\n  encoders:\n{encoders}\n  fusion: {fusion_entry}\n  head: {head_entry}"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def _literal(value: Any) -> str:
    """Samples and params as Python source (JSON's syntax for these plain values)."""
    return json.dumps(value)
