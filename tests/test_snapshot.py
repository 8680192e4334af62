"""The registry snapshot: the ``mmplug`` command lists, describes and validates from it while
it is valid, and loads afresh the moment a distribution or a plugin file changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmplug.plugins import snapshot
from mmplug.plugins.loading import load_plugins

from .conftest import FakeDist

#: The fake distributions' plugin modules: an encoder with a params model, and a fusion.
SOURCE = """
from pydantic import Field
import mmplug

class {cls}Params(mmplug.Params):
    width: int = Field(default={width}, ge=1, description="How wide.")

@mmplug.hookimpl
def register_encoders(register):
    register("{name}", "{module}.impl:Encoder", params={cls}Params, modality="text",
             summary="{summary}")

@mmplug.hookimpl
def register_fusions(register):
    register("{name}-fuse", "{module}.impl:Fusion", summary="fuses")
"""

ENTRY_MODULE = """
import mmplug
from acme_alpha.params import AlphaParams
from acme_words import SUMMARY

@mmplug.hookimpl
def register_encoders(register):
    register("alpha", "acme_alpha.impl:Encoder", params=AlphaParams, modality="text",
             summary=SUMMARY)
"""

PARAMS_MODULE = """
from pydantic import Field
import mmplug

class AlphaParams(mmplug.Params):
    width: int = Field(default=8, ge=1, description="How wide.")
"""

HEADS = """
import mmplug

@mmplug.hookimpl
def register_heads(register):
    register("alpha-head", "acme_alpha.impl:Head")
"""

BROKEN = "raise ImportError('acme_broken needs libfoo')\n"

COMMANDS = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    command = cli.add_parser("hello", help="say hello")
    command.set_defaults(run=lambda args: print("hello") or 0)
"""

CONFIG = """\
model:
  encoders:
    text: {name: alpha, width: 3}
  fusion: {name: alpha-fuse}
  head: {name: classification, num_classes: 2}
"""


def install(site: Path, distribution: str, version: str, source: str) -> str:
    """Write ``distribution`` as pip would: its module (a package) and a dist-info folder."""
    module = distribution.replace("-", "_")
    uninstall(site, distribution)
    package = site / module
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(f"[mmplug]\n{module.split('_')[-1]} = {module}\n")
    return module


def uninstall(site: Path, distribution: str) -> None:
    module = distribution.replace("-", "_")
    shutil.rmtree(site / module, ignore_errors=True)
    for info in site.glob(f"{module}-*.dist-info"):
        shutil.rmtree(info)


def plugin(name: str, *, width: int = 8, summary: str = "an encoder") -> str:
    return SOURCE.format(
        cls=name.title(), name=name, module=f"acme_{name}", width=width, summary=summary
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "acme-alpha", "1.0", plugin("alpha"))
    return site


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def mmplug(
    site: Path, cache: Path, *args: str, code: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``mmplug ARGS`` (or ``python -c CODE``) seeing the plugins in ``site``, with its
    snapshot in ``cache``. Bytecode is not written: Python would otherwise import a module
    rewritten within the same second at the same size from its stale .pyc."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MMPLUG_")}
    environ |= {"PYTHONPATH": str(site), "MMPLUG_CACHE_DIR": str(cache)}
    environ |= {"PYTHONDONTWRITEBYTECODE": "1", **env}
    command = ["-c", code] if code is not None else ["-m", "mmplug", *args]
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        env=environ,
        cwd=site.parent,
        timeout=120,
    )


def listed(site: Path, cache: Path, **env: str) -> dict[str, str]:
    """``mmplug list --json`` as ``{name: version}`` of the acme components, checked to be
    what a load without the snapshot lists too."""
    result = mmplug(site, cache, "list", "--json", **env)
    assert result.returncode == 0, result.stderr
    fresh = mmplug(site, cache, "list", "--json", MMPLUG_NO_CACHE="1", **env)
    assert result.stdout == fresh.stdout
    rows = json.loads(result.stdout)
    return {r["name"]: r["version"] for r in rows if r["distribution"].startswith("acme-")}


def snapshot_file(cache: Path) -> Path:
    [path] = cache.glob("plugins-*.json")
    return path


def test_a_distribution_installed_upgraded_and_removed_between_calls(
    site: Path, cache: Path
) -> None:
    assert listed(site, cache) == {"alpha": "1.0", "alpha-fuse": "1.0"}
    assert snapshot_file(cache).is_file()
    assert listed(site, cache) == {"alpha": "1.0", "alpha-fuse": "1.0"}  # from the snapshot

    install(site, "acme-beta", "0.1", plugin("beta"))
    assert listed(site, cache) == {
        "alpha": "1.0",
        "alpha-fuse": "1.0",
        "beta": "0.1",
        "beta-fuse": "0.1",
    }

    install(site, "acme-beta", "0.2", plugin("gamma").replace("acme_gamma", "acme_beta"))
    assert listed(site, cache) == {
        "alpha": "1.0",
        "alpha-fuse": "1.0",
        "gamma": "0.2",
        "gamma-fuse": "0.2",
    }

    uninstall(site, "acme-beta")
    assert listed(site, cache) == {"alpha": "1.0", "alpha-fuse": "1.0"}


def test_a_version_rewritten_in_place_is_seen(site: Path, cache: Path) -> None:
    """As ``setup.py develop`` rewrites an egg-info: same folder, new METADATA."""
    assert listed(site, cache)["alpha"] == "1.0"
    [info] = site.glob("acme_alpha-*.dist-info")
    metadata = info / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 1.0", "Version: 1.1"))
    assert listed(site, cache)["alpha"] == "1.1"


def test_entry_points_rewritten_in_place_are_seen(site: Path, cache: Path) -> None:
    assert listed(site, cache)
    [info] = site.glob("acme_alpha-*.dist-info")
    (info / "entry_points.txt").write_text("[console_scripts]\nalpha = acme_alpha:main\n")
    assert listed(site, cache) == {}


def test_editing_an_editable_plugin_in_place_is_seen(site: Path, cache: Path) -> None:
    assert listed(site, cache) == {"alpha": "1.0", "alpha-fuse": "1.0"}
    entry = site / "acme_alpha" / "__init__.py"
    entry.write_text(entry.read_text().replace('"alpha-fuse"', '"alpha-fusx"'))  # same size
    assert listed(site, cache) == {"alpha": "1.0", "alpha-fusx": "1.0"}


def test_editing_a_module_the_entry_module_imports_is_seen(site: Path, cache: Path) -> None:
    """A params model from a submodule, a summary from another distribution's module:
    ``info`` shows what they say now."""
    package = site / "acme_alpha"
    (package / "params.py").write_text(PARAMS_MODULE)
    (package / "__init__.py").write_text(ENTRY_MODULE)
    (site / "acme_words.py").write_text('SUMMARY = "alpha v1"\n')

    def info() -> tuple[str, object]:
        result = mmplug(site, cache, "info", "alpha", "--json")
        assert result.returncode == 0, result.stderr
        [info] = json.loads(result.stdout)
        return info["summary"], info["params"][0]["default"]

    assert info() == ("alpha v1", 8)
    assert info() == ("alpha v1", 8)
    params = package / "params.py"
    params.write_text(params.read_text().replace("default=8", "default=9"))
    assert info() == ("alpha v1", 9)
    (site / "acme_words.py").write_text('SUMMARY = "alpha v2"\n')
    assert info() == ("alpha v2", 9)


def test_a_valid_snapshot_imports_no_plugin_to_list(site: Path, cache: Path) -> None:
    install(site, "acme-beta", "0.1", plugin("beta"))
    code = (
        "import contextlib, io, sys\n"
        "from mmplug.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(sys.argv[1:]) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('acme_', 'mmplug_', 'pydantic'))"
        " and '.' not in m))\n"
    )

    def imported(*args: str) -> list[str]:
        result = mmplug(site, cache, code=code.replace("sys.argv[1:]", repr(list(args))))
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout.replace("'", '"')))

    cold = imported("list")
    assert {"acme_alpha", "acme_beta", "mmplug_text", "pydantic"} <= set(cold)
    # mmplug-demo adds a command: its hook must run, so it is the one plugin imported; info
    # shows the params the snapshot describes, so pydantic stays out too
    assert imported("list") == ["mmplug_demo"]
    assert imported("info", "beta") == ["mmplug_demo"]
    assert imported("plugins") == ["mmplug_demo"]


def test_validate_checks_params_from_the_snapshot(site: Path, cache: Path) -> None:
    config = site.parent / "config.yaml"
    config.write_text(CONFIG)
    first = mmplug(site, cache, "validate", str(config))
    again = mmplug(site, cache, "validate", str(config))
    fresh = mmplug(site, cache, "validate", str(config), MMPLUG_NO_CACHE="1")
    assert first.returncode == again.returncode == fresh.returncode == 0, again.stderr
    assert first.stdout == again.stdout == fresh.stdout
    assert "model.encoders.text: alpha (acme-alpha 1.0) [modality text]" in again.stdout
    assert "width=3" in again.stdout

    bad = mmplug(site, cache, "validate", str(config), "model.encoders.text.width=0")
    assert bad.returncode == 2
    assert "model.encoders.text.width" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "a list", "no fields", "components not a list", "another key"],
)
def test_a_damaged_snapshot_is_ignored_and_rewritten(site: Path, cache: Path, damage: str) -> None:
    expected = listed(site, cache)
    path = snapshot_file(cache)
    good = path.read_text()
    data = json.loads(good)
    if damage == "components not a list":
        data["plugins"][-1]["components"] = "alpha"
    if damage == "another key":
        data["fingerprint"] = "0"
    damaged = {
        "garbage": b"\x00\xff not json",
        "truncated": good[: len(good) // 2].encode(),
        "a list": b"[]",
        "no fields": json.dumps({"format": snapshot.FORMAT}).encode(),
    }.get(damage, json.dumps(data).encode())
    path.write_bytes(damaged)

    result = mmplug(site, cache, "list", "--json")
    assert result.returncode == 0 and result.stderr == ""
    assert {r["name"]: r["version"] for r in json.loads(result.stdout) if "alpha" in r["name"]} == (
        expected
    )
    assert json.loads(path.read_text())["format"] == snapshot.FORMAT  # rewritten


def test_an_unusable_cache_dir_is_no_error(site: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for cache in (not_a_dir, not_a_dir / "below"):
        result = mmplug(site, cache, "list", "--json")
        assert result.returncode == 0 and result.stderr == ""
        assert "alpha" in {r["name"] for r in json.loads(result.stdout)}


def test_no_cache_reads_and_writes_no_snapshot(site: Path, cache: Path) -> None:
    assert mmplug(site, cache, "list", MMPLUG_NO_CACHE="1").returncode == 0
    assert not cache.exists()


def test_every_command_prints_the_same_with_and_without_the_snapshot(
    site: Path, cache: Path
) -> None:
    install(site, "acme-broken", "0.0.1", BROKEN)
    install(site, "acme-hello", "1.0", COMMANDS)
    commands = [
        ("list", "--json"),
        ("list",),
        ("plugins", "--json"),
        ("plugins",),
        ("info", "alpha"),
        ("info", "alpha", "--json"),
        ("info", "classification"),
        ("hello",),
        ("--help",),
    ]
    # acme-nope is not installed: a warning that is no plugin's failure
    disabled = {"MMPLUG_DISABLE_PLUGINS": "acme-alpha,acme-nope"}
    for args, env in [*((args, {}) for args in commands), (commands[0], disabled)]:
        runs = [mmplug(site, cache, *args, **env) for _ in range(2)]
        runs.append(mmplug(site, cache, *args, MMPLUG_NO_CACHE="1", **env))
        outcomes = {(r.returncode, r.stdout, r.stderr) for r in runs}
        assert len(outcomes) == 1, (args, env, outcomes)
        [(code, _, stderr)] = outcomes
        assert code == 0
        # a failure is reported by every command (but plugins, which shows it, and --help)
        assert ("acme_broken needs libfoo" in stderr) == (args[0] not in ("plugins", "--help"))
        assert ("names acme-nope, which is not an installed plugin" in stderr) == bool(env)


def test_a_failed_plugin_loads_afresh_each_time(site: Path, cache: Path) -> None:
    install(site, "acme-broken", "0.0.1", BROKEN)
    assert mmplug(site, cache, "list").returncode == 0
    [entry] = [
        p
        for p in json.loads(snapshot_file(cache).read_text())["plugins"]
        if p["distribution"] == "acme-broken"
    ]
    assert entry["status"] == "failed" and "components" not in entry
    strict = mmplug(site, cache, "list", MMPLUG_STRICT_PLUGINS="1")
    assert strict.returncode == 2
    assert strict.stderr.startswith("mmplug: error: plugin 'broken' from acme-broken 0.0.1")
    fresh = mmplug(site, cache, "list", MMPLUG_STRICT_PLUGINS="1", MMPLUG_NO_CACHE="1")
    assert (strict.stdout, strict.stderr) == (fresh.stdout, fresh.stderr)


def test_only_what_the_snapshot_can_name_is_restored(fake_dist: FakeDist, tmp_path: Path) -> None:
    """A params model made in a function has no import path: its plugin loads afresh."""
    fake_dist(
        "acme-local",
        "1.0",
        textwrap.dedent("""
        import mmplug

        def make():
            class LocalParams(mmplug.Params):
                size: int = 1
            return LocalParams

        @mmplug.hookimpl
        def register_heads(register):
            register("local", "acme.local:Head", params=make())
        """),
    )
    environ = {"MMPLUG_CACHE_DIR": str(tmp_path / "cache"), "MMPLUG_LOAD_PLUGINS": "acme-local"}
    fresh = snapshot.load_plugins_cached(environ)
    cached = snapshot.load_plugins_cached(environ)
    [entry] = [
        p
        for p in json.loads(snapshot_file(tmp_path / "cache").read_text())["plugins"]
        if p["distribution"] == "acme-local"
    ]
    assert "components" not in entry
    for host in (fresh, cached):
        assert host.registry.get("head", "local").params.model_fields["size"].default == 1
    assert [r.describe() for r in cached.records] == [r.describe() for r in fresh.records]


def test_restored_specs_are_those_of_a_fresh_load(fake_dist: FakeDist, tmp_path: Path) -> None:
    module = fake_dist("acme-alpha", "1.0", plugin("alpha"))
    environ = {"MMPLUG_CACHE_DIR": str(tmp_path / "cache"), "MMPLUG_LOAD_PLUGINS": "acme-alpha"}
    fresh = load_plugins(environ=environ)
    snapshot.load_plugins_cached(environ)  # writes the snapshot
    cached = snapshot.load_plugins_cached(environ)
    assert isinstance(cached.registry.get("encoder", "alpha"), snapshot.CachedSpec)
    for spec in fresh.registry.components():
        again = cached.registry.get(spec.kind, spec.qualified_name)
        assert again.describe() == spec.describe()
        assert again.param_rows() == spec.param_rows()
        assert (again.factory, again.plugin) == (spec.factory, spec.plugin)
        assert again.params is spec.params  # the class itself, imported on first use
    assert sys.modules[module].AlphaParams is cached.registry.get("encoder", "alpha").params


def test_a_plugin_imported_before_loading_is_watched_too(
    fake_dist: FakeDist, tmp_path: Path
) -> None:
    """``mmplug.registry()`` after an import of the plugin: its file is watched all the same
    (here nothing it registers is defined in it)."""
    module = fake_dist("acme-alpha", "1.0", HEADS)
    environ = {"MMPLUG_CACHE_DIR": str(tmp_path / "cache"), "MMPLUG_LOAD_PLUGINS": "acme-alpha"}
    load_plugins(environ=environ)  # imports it
    snapshot.load_plugins_cached(environ)
    path, key = snapshot.snapshot_path(environ), snapshot.fingerprint(environ)
    assert snapshot.restore(snapshot.read_snapshot(path), key) is not None
    source = Path(fake_dist.site) / f"{module}.py"
    source.write_text(source.read_text() + "\n")
    assert snapshot.restore(snapshot.read_snapshot(path), key) is None
