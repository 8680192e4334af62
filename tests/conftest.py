"""Shared fixtures: fresh plugin hosts, the example plugin, and fake installed distributions."""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import mmplug
from mmplug.plugins.host import PluginHost

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
# Helper modules shared by test files (training_helpers); --import-mode=importlib doesn't
# put the tests folder on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))
_unique = itertools.count()

# No test reads or writes the user's plugin snapshot (~/.cache/mmplug): every process of the
# session, the `mmplug` subprocesses included, keeps its snapshot here.
_SNAPSHOTS = tempfile.mkdtemp(prefix="mmplug-snapshots-")
os.environ["MMPLUG_CACHE_DIR"] = _SNAPSHOTS
atexit.register(shutil.rmtree, _SNAPSHOTS, ignore_errors=True)


def environ_without_settings() -> dict[str, str]:
    """``os.environ`` without the ``MMPLUG_*`` settings, for a child process that must not
    see the caller's, but with the session's snapshot folder."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MMPLUG_")}
    return environ | {"MMPLUG_CACHE_DIR": _SNAPSHOTS}


@pytest.fixture
def host() -> PluginHost:
    """A fresh plugin manager and registry with nothing loaded (autoload off)."""
    return PluginHost()


@pytest.fixture(scope="session")
def toy_plugin() -> ModuleType:
    """examples/toy_plugin.py: modalities numbers/word, encoders mlp/char-bag, fusion mean."""
    spec = importlib.util.spec_from_file_location("toy_plugin", ROOT / "examples" / "toy_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_plugin"] = module  # importable by name (pickling), as an installed one is
    spec.loader.exec_module(module)
    return module


def make_toy_host(toy_plugin: ModuleType) -> PluginHost:
    """Core's components plus the example plugin, credited to distribution ``toy-plugin``."""
    from mmplug.plugins.loading import load_plugins

    host = load_plugins(entry_points=False)
    host.add(toy_plugin, name="toy", distribution="toy-plugin", version="1.0")
    return host


@pytest.fixture
def toy_host(toy_plugin: ModuleType) -> PluginHost:
    return make_toy_host(toy_plugin)


class Plugin:
    """An inline plugin registering whatever ``calls`` lists: (hook, args, kwargs)."""

    def __init__(self, **hooks: list[tuple]) -> None:
        for hook, calls in hooks.items():
            setattr(self, hook, self._make(calls))

    @staticmethod
    def _make(calls: list[tuple]):
        @mmplug.hookimpl
        def impl(register):
            for args, kwargs in calls:
                register(*args, **kwargs)

        return impl


def heads(*names: str) -> Plugin:
    """An inline plugin registering heads with lazy factories that are never built."""
    return Plugin(register_heads=[((name, "pkg.mod:Head"), {}) for name in names])


FakeDist = Callable[..., str]

#: A plugin module registering one encoder (a lazy factory, never built), for fake_dist.
GOOD = """
import mmplug

@mmplug.hookimpl
def register_encoders(register):
    register("char-cnn", "somewhere.lazy:CharCNN", modality="text", summary="chars")
"""


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Write a fake installed distribution and return the module name its entry point names.

    ``fake_dist("mmplug-foo", "1.2", source)`` creates ``mmplug_foo-1.2.dist-info`` (METADATA
    and an ``entry_points.txt`` in group ``mmplug``) and a module holding ``source`` in
    ``tmp_path/site``, which is put on ``sys.path``. Discover with ``path=[fake_dist.site]``.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(
        distribution: str,
        version: str,
        source: str,
        *,
        entry_point: str | None = None,
        attr: str | None = None,
    ) -> str:
        module = f"fake_plugin_{next(_unique)}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        target = f"{module}:{attr}" if attr else module
        name = entry_point or distribution.removeprefix("mmplug-")
        (info / "entry_points.txt").write_text(f"[mmplug]\n{name} = {target}\n")
        created.append(module)
        return module

    make.site = str(site)  # type: ignore[attr-defined]
    yield make
    for module in created:
        sys.modules.pop(module, None)


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed as distribution ``toy-plugin`` 1.0 (a dist-info and its
    module on a path of its own), so that the ``mmplug`` command discovers it."""
    site = tmp_path_factory.mktemp("site")
    (site / "toy_plugin.py").write_text((ROOT / "examples" / "toy_plugin.py").read_text())
    info = site / "toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mmplug]\ntoy = toy_plugin\n")
    return site


def cli(site: Path, *args: str | bytes, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``mmplug ARGS`` in a child process that discovers only the plugins in ``site`` (and
    selects only toy-plugin), with ``env`` on top."""
    environ = environ_without_settings()
    environ |= {"MMPLUG_LOAD_PLUGINS": "toy-plugin", "PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-m", "mmplug", *args],
        capture_output=True,
        text=True,
        errors="replace",
        env=environ,
        cwd=cwd,
        timeout=300,
    )
