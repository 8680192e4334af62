"""Plugin discovery and loading: fake distributions, isolation, selection, strictness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mmplug
from mmplug.errors import PluginLoadError
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import discover, load_plugins

from .conftest import GOOD, FakeDist, heads

HOOK_RAISES = """
import mmplug

@mmplug.hookimpl
def register_modalities(register):
    register("half", "somewhere:Half")

@mmplug.hookimpl
def register_encoders(register):
    raise RuntimeError("weights index is corrupt")
"""


def test_discovers_entry_points_of_installed_distributions(fake_dist: FakeDist) -> None:
    module = fake_dist("mmplug-chars", "0.3.1", GOOD)
    [found] = discover([fake_dist.site])
    assert (found.name, found.module, found.distribution, found.version) == (
        "chars",
        module,
        "mmplug-chars",
        "0.3.1",
    )
    host = load_plugins(path=[fake_dist.site], environ={})
    spec = host.registry.get("encoder", "char-cnn")
    assert (spec.distribution, spec.version, spec.plugin) == (
        "mmplug-chars",
        "0.3.1",
        "mmplug-chars:chars",
    )
    record = next(r for r in host.records if r.distribution == "mmplug-chars")
    assert record.status == "loaded" and record.components == ["encoder:char-cnn"]


def test_core_components_load_through_the_same_hooks(fake_dist: FakeDist) -> None:
    host = load_plugins(path=[fake_dist.site], environ={})
    [core] = [r for r in host.records if r.distribution == "mmplug"]
    assert core.module == "mmplug.plugins.builtin" and core.version == mmplug.__version__
    assert core.components == [
        "fusion:late",
        "head:classification",
        "head:multilabel",
        "head:regression",
    ]


def test_entry_point_may_name_an_object(fake_dist: FakeDist) -> None:
    fake_dist(
        "acme-vision",
        "2.0",
        """
import mmplug

class Plugin:
    @mmplug.hookimpl
    def register_fusions(self, register):
        register("acme-sum", "acme.fusion:Sum")

plugin = Plugin()
""",
        entry_point="vision",
        attr="plugin",
    )
    host = load_plugins(path=[fake_dist.site], environ={})
    assert host.registry.get("fusion", "acme-sum").distribution == "acme-vision"


def test_broken_import_is_isolated(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-broken", "0.1", "import does_not_exist_anywhere\n")
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    host = load_plugins(path=[fake_dist.site], environ={})
    [broken] = host.failures
    assert broken.distribution == "mmplug-broken"
    assert "failed to import: ModuleNotFoundError" in (broken.error or "")
    assert "does_not_exist_anywhere" in (broken.error or "")
    assert host.registry.get("encoder", "char-cnn")  # the others still load


def test_hook_that_raises_is_isolated_and_rolled_back(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-half", "1.0", HOOK_RAISES)
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    host = load_plugins(path=[fake_dist.site], environ={})
    [failed] = host.failures
    assert failed.error == "register_encoders raised RuntimeError: weights index is corrupt"
    assert "half" not in host.registry.names("modality")  # registered before the raise
    assert host.registry.names("encoder") == ["char-cnn"]


def test_strict_mode_makes_a_failure_fatal(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-half", "1.0", HOOK_RAISES)
    with pytest.raises(PluginLoadError, match=r"'half' from mmplug-half 1.0 register_encoders"):
        load_plugins(path=[fake_dist.site], environ={"MMPLUG_STRICT_PLUGINS": "1"})


def test_load_plugins_selects_distributions(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    fake_dist("mmplug-half", "1.0", HOOK_RAISES)
    host = load_plugins(path=[fake_dist.site], environ={"MMPLUG_LOAD_PLUGINS": "mmplug-chars"})
    statuses = {r.distribution: r.status for r in host.records}
    assert statuses == {"mmplug": "loaded", "mmplug-chars": "loaded", "mmplug-half": "not selected"}


def test_load_plugins_set_but_empty_loads_none(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    host = load_plugins(path=[fake_dist.site], environ={"MMPLUG_LOAD_PLUGINS": ""})
    assert host.registry.names("encoder") == []
    assert host.registry.names("head") == ["classification", "multilabel", "regression"]


def test_disable_plugins_blocks_by_distribution_or_entry_point_name(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    fake_dist("mmplug-half", "1.0", HOOK_RAISES)
    for blocked in ("mmplug-half", "half", "MMPLUG_HALF"):
        host = load_plugins(path=[fake_dist.site], environ={"MMPLUG_DISABLE_PLUGINS": blocked})
        statuses = {r.distribution: r.status for r in host.records}
        assert statuses["mmplug-half"] == "disabled"
        assert statuses["mmplug-chars"] == "loaded"
        assert not host.failures


def test_misspelt_hook_is_reported_with_a_suggestion(host: PluginHost) -> None:
    class Typo:
        @mmplug.hookimpl
        def register_encoder(self, register):  # missing the final s
            register("x", "m:X", modality="text")

    record = host.add(Typo(), name="typo")
    assert record.status == "failed"
    assert "unknown hook 'register_encoder' (did you mean 'register_encoders'?)" in (
        record.error or ""
    )


def test_hook_asking_for_an_argument_that_does_not_exist_fails(host: PluginHost) -> None:
    class Greedy:
        @mmplug.hookimpl
        def register_heads(self, register, device):
            register("x", "m:X")

    record = host.add(Greedy(), name="greedy")
    assert record.status == "failed" and "could not be registered" in (record.error or "")


def test_hooks_only_get_the_arguments_they_ask_for(host: PluginHost) -> None:
    calls = []

    class NoArgs:
        @mmplug.hookimpl
        def register_heads(self):
            calls.append("called")

    assert host.add(NoArgs(), name="no-args").status == "loaded"
    assert calls == ["called"]


def test_distribution_found_twice_on_the_path_counts_once(fake_dist: FakeDist, tmp_path) -> None:
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    info = shadow / "mmplug_chars-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmplug-chars\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmplug]\nchars = old_module\n")
    found = discover([fake_dist.site, str(shadow)])
    assert [(p.distribution, p.version) for p in found] == [("mmplug-chars", "0.3.1")]


def test_loading_plugins_never_imports_torch() -> None:
    code = (
        "import sys, mmplug; from mmplug.plugins.loading import load_plugins; h = load_plugins();"
        "assert h.registry.names('head'); print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_second_plugin_under_a_taken_name_fails_without_harming_the_first(
    host: PluginHost,
) -> None:
    first = host.add(heads("first"), name="p", distribution="acme")
    second = host.add(heads("second"), name="p", distribution="acme")
    assert first.status == "loaded" and first.components == ["head:first"]
    assert second.status == "failed" and "same name as a plugin already loaded" in (
        second.error or ""
    )
    assert host.registry.names("head") == ["first"]


def test_unhashable_plugin_is_isolated(host: PluginHost) -> None:
    class Unhashable:
        __hash__ = None  # as a plain @dataclass instance

        @mmplug.hookimpl
        def register_heads(self, register):
            register("u", "m:U")

    assert "is not hashable" in (host.add(Unhashable(), name="u").error or "")
    assert host.add(heads("fine"), name="fine").status == "loaded"
    assert host.registry.names("head") == ["fine"]


def test_import_failure_under_a_taken_name_keeps_the_loaded_plugin(host: PluginHost) -> None:
    host.add(heads("kept"), name="v", distribution="acme")
    record = host.add_module("no_such_module_anywhere", name="v", distribution="acme", version="1")
    assert record.status == "failed"
    assert host.registry.names("head") == ["kept"]


def test_entry_point_with_extras_loads(fake_dist: FakeDist) -> None:
    module = fake_dist("mmplug-chars", "0.3.1", GOOD)
    info = next(Path(fake_dist.site).glob("mmplug_chars-*.dist-info"))
    (info / "entry_points.txt").write_text(f"[mmplug]\nchars = {module} [gpu]\n")
    host = load_plugins(path=[fake_dist.site], environ={})
    assert not host.failures
    assert host.registry.get("encoder", "char-cnn").distribution == "mmplug-chars"


def test_plugin_without_hookimpls_is_reported(host: PluginHost) -> None:
    class Unmarked:
        def register_heads(self, register):  # no @mmplug.hookimpl
            register("x", "m:X")

    record = host.add(Unmarked(), name="unmarked")
    assert record.status == "failed"
    assert "implements no mmplug hook" in (record.error or "")


# -- plugin API version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "status", "message"),
    [
        (None, "loaded", None),
        (mmplug.API_VERSION, "loaded", None),
        (mmplug.API_VERSION + 1, "incompatible", "newer than this mmplug's"),
        (0, "incompatible", "no longer supports"),
        ("1.0", "incompatible", "must be an int"),
    ],
)
def test_plugin_api_version_is_checked_before_its_hooks_run(
    fake_dist: FakeDist, declared: object, status: str, message: str | None
) -> None:
    source = GOOD if declared is None else f"MMPLUG_API_VERSION = {declared!r}\n{GOOD}"
    fake_dist("mmplug-chars", "0.3.1", source)
    host = load_plugins(path=[fake_dist.site], environ={})
    record = next(r for r in host.records if r.distribution == "mmplug-chars")
    assert (record.status, record.api_version) == (status, declared)
    if message is None:
        assert host.registry.get("encoder", "char-cnn").distribution == "mmplug-chars"
        return
    assert message in (record.error or "")
    assert record in host.failures
    assert host.registry.find("char-cnn") == []


def test_any_declared_api_version_is_reported_as_json(fake_dist: FakeDist) -> None:
    """An odd declaration is refused and shown as its repr, never breaking ``--json``."""
    fake_dist(
        "mmplug-chars",
        "0.3.1",
        f"import fractions\nMMPLUG_API_VERSION = fractions.Fraction(1)\n{GOOD}",
    )
    host = load_plugins(path=[fake_dist.site], environ={})
    record = next(r for r in host.records if r.distribution == "mmplug-chars")
    assert record.status == "incompatible"
    assert record.api_version_text() == "Fraction(1, 1)"
    assert json.loads(json.dumps(record.describe()))["api_version"] == "Fraction(1, 1)"
    assert host.records[0].describe()["api_version"] == mmplug.API_VERSION


def test_incompatible_plugin_is_fatal_in_strict_mode(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-chars", "0.3.1", f"MMPLUG_API_VERSION = 99\n{GOOD}")
    with pytest.raises(PluginLoadError, match="written for plugin API 99"):
        load_plugins(path=[fake_dist.site], environ={"MMPLUG_STRICT_PLUGINS": "1"})


def test_core_declares_the_api_it_implements() -> None:
    host = load_plugins(entry_points=False)
    assert host.records[0].api_version == mmplug.API_VERSION
