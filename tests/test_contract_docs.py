"""docs/plugin-hooks.md is the plugin contract: every hook, every argument of ``register``,
every public member of each interface and every error a plugin raises or meets is there."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import mmplug
from mmplug.plugins import hookspecs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugin-hooks.md"

#: Interface -> the heading of its section on the page.
INTERFACES = {
    "Modality": "### `Modality`",
    "Encoder": "### `Encoder` (an `nn.Module`)",
    "EncoderOutput": "### `EncoderOutput`",
    "Fusion": "### `Fusion` (an `nn.Module`)",
    "Head": "### `Head` (an `nn.Module`)",
    "Task": "### `Task`",
}


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    text = page()
    start = text.index(heading + "\n") + len(heading)
    following = re.search(r"^#{1,6} ", text[start:], flags=re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def public_members(cls: type) -> list[str]:
    """What a plugin author implements, overrides or calls on ``cls``: the methods and class
    attributes it defines or annotates, without the private ones."""
    names = set(vars(cls)) | set(getattr(cls, "__annotations__", {}))
    return sorted(name for name in names if not name.startswith("_"))


def mentioned(name: str, text: str) -> bool:
    """``name`` in code spans as itself or called: `` `name` `` or `` `name(...)` ``."""
    return re.search(rf"`(?:[\w.]+\.)?{re.escape(name)}(?:`|\()", text) is not None


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_every_public_member_of_each_interface_is_in_its_section(interface: str) -> None:
    text = section(INTERFACES[interface])
    cls = getattr(mmplug, interface)
    missing = [name for name in public_members(cls) if not mentioned(name, text)]
    assert not missing, f"{interface}: {missing} not documented under {INTERFACES[interface]!r}"


def test_the_members_found_include_the_abstract_methods() -> None:
    """The introspection the test above relies on sees what matters (a check of the check)."""
    assert {"forward", "loss", "predict", "metrics", "task", "task_class"} <= set(
        public_members(mmplug.Head)
    )
    assert {"load", "name"} <= set(public_members(mmplug.Modality))
    assert {"preprocess", "preprocessor", "fit", "modality", "output_dim"} <= set(
        public_members(mmplug.Encoder)
    )


@pytest.mark.parametrize("hook", hookspecs.HOOKS)
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    arguments = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"`{hook}({arguments})`" in page()


def test_every_argument_of_register_is_documented() -> None:
    parameters = list(inspect.signature(mmplug.RegisterFn.__call__).parameters)[1:]
    text = section("## `register(name, factory, *, params=None, summary=None, modality=None)`")
    missing = [name for name in parameters if f"**`{name}`**" not in text]
    assert not missing


def test_every_error_class_a_plugin_can_raise_or_meet_is_named() -> None:
    errors = [
        name
        for name in mmplug.__all__
        if isinstance(getattr(mmplug, name), type)
        and issubclass(getattr(mmplug, name), mmplug.MmplugError | mmplug.MmplugWarning)
    ]
    assert "DataError" in errors
    missing = [name for name in errors if not mentioned(name, page())]
    assert not missing


def test_the_contract_table_names_the_rules_the_issue_found_missing() -> None:
    """The rules an outside author could not learn from the docs before."""
    table = section("## The contract: every rule core enforces, and what breaking it gets")
    for rule in (
        "`Modality.load` raises `DataError`",
        "leading dimension `n`",
        "`task_class()`",
        "model.modalities.KEY",
    ):
        assert rule in table, rule
