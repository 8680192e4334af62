"""The plugin as a distribution: entry point, registration, and a cheap entry-point module."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from mmplug.cli import main
from mmplug.plugins.host import PluginHost
from mmplug_text import __version__


def test_installed_plugin_is_discovered_through_its_entry_point(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only this distribution, so other plugins' state can't change the listing.
    monkeypatch.setenv("MMPLUG_LOAD_PLUGINS", "mmplug-text")
    assert main(["list", "encoder", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {
        "kind": "encoder",
        "name": "bert",
        "modality": "text",
        "distribution": "mmplug-text",
        "version": __version__,
    }.items() <= next(c for c in listed if c["name"] == "bert").items()
    assert __version__ == importlib.metadata.version("mmplug-text")  # one version, not two


def test_it_registers_the_text_modality_and_the_bert_encoder(text_host: PluginHost) -> None:
    registry = text_host.registry
    modality = registry.get("modality", "text")
    bert = registry.get("encoder", "mmplug-text:bert")
    assert (modality.distribution, modality.version) == ("mmplug-text", __version__)
    assert bert.modality == "text"
    assert bert.factory == "mmplug_text.bert:BertEncoder"
