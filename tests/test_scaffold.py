"""`mmplug new-plugin`: the package it writes installs, lists and passes the conformance kit."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from mmplug import MmplugError
from mmplug.plugins.loading import load_plugins
from mmplug.scaffold import new_plugin
from mmplug.testing import Conformance

CASES = {
    "encoder": ({"kind": "encoder"}, ["encoder.py"], ["encoder:{name}"]),
    "modality": ({"kind": "modality"}, ["modality.py", "encoder.py"], ["modality:{name}"]),
    "new-modality": (
        {"kind": "encoder", "modality": "{name}-vec"},
        ["modality.py", "encoder.py"],
        ["modality:{name}-vec", "encoder:{name}"],
    ),
    "fusion": ({"kind": "fusion"}, ["fusion.py"], ["fusion:{name}"]),
    "head": ({"kind": "head"}, ["head.py"], ["head:{name}"]),
}


def _generate(case: str, tmp_path: Path) -> tuple[str, Path, list[str]]:
    kwargs, files, components = CASES[case]
    name = f"gen-{case}"
    options = {k: v.format(name=name) for k, v in kwargs.items()}
    target = new_plugin(
        name, out=tmp_path / f"mmplug-{name}", registry=load_plugins().registry, **options
    )
    module = f"mmplug_{name.replace('-', '_')}"
    for file in [*files, "__init__.py", "py.typed"]:
        assert (target / module / file).is_file(), file
    assert {p.name for p in target.iterdir()} == {"pyproject.toml", "README.md", "tests", module}
    return module, target, [c.format(name=name) for c in components]


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_package_is_lint_clean_and_passes_the_kit(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name, target, components = _generate(case, tmp_path)
    ruff = Path(sys.executable).parent / "ruff"
    for command in (["check"], ["format", "--check"]):
        lint = subprocess.run(
            [str(ruff), *command, "--no-cache", str(target)], capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    monkeypatch.syspath_prepend(str(target))
    module = importlib.import_module(module_name)
    host = load_plugins(entry_points=False)
    record = host.add(module, name="gen", distribution=target.name, version=module.__version__)
    assert record.status == "loaded", record.error
    assert record.api_version == 1
    assert all(c in record.components for c in components)
    # the generated test file's own samples and params (up to its test, which needs an install)
    test_source = (target / "tests" / "test_conformance.py").read_text()
    test_source = test_source.split("@conformance.parametrize()")[0]
    namespace: dict[str, object] = {}
    exec(compile(test_source, "test_conformance.py", "exec"), namespace)
    generated = namespace["conformance"]
    assert isinstance(generated, Conformance)
    if case == "encoder":  # the text modality comes from mmplug-text
        host.add_module("mmplug_text", name="text", distribution="mmplug-text", version="0.1.0")
    kit = Conformance(
        target.name, registry=host.registry, samples=generated.samples, params=generated.params
    )
    for check in kit.checks():
        try:
            check()
        except pytest.skip.Exception:  # the freeze check, for components without freeze
            assert check.id.endswith(":freeze"), check.id


def test_installed_package_is_listed_and_its_tests_pass(tmp_path: Path) -> None:
    """pip install -e into a fresh environment layered on this one, then list and test."""
    _, target, _ = _generate("modality", tmp_path)
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    inner = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir (not a bare path) so that this environment's editable installs work there too
    outer = sysconfig.get_paths()["purelib"]
    (Path(inner) / "outer.pth").write_text(f"import site; site.addsitedir({outer!r})\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )

    install = run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(target))
    assert install.returncode == 0, install.stdout + install.stderr
    listed = run("-m", "mmplug", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("encoder", "gen-modality-mlp")]["distribution"] == "mmplug-gen-modality"
    assert rows[("modality", "gen-modality")]["version"] == "0.1.0"
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(target / "tests"))
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_bad_requests_are_refused_with_the_reason(tmp_path: Path) -> None:
    registry = load_plugins().registry
    with pytest.raises(MmplugError, match="invalid plugin name 'Bad Name'"):
        new_plugin("Bad Name", out=tmp_path / "x", registry=registry)
    with pytest.raises(MmplugError, match="unknown kind 'widget'"):
        new_plugin("ok", kind="widget", out=tmp_path / "x", registry=registry)
    with pytest.raises(MmplugError, match="--modality is for encoders and modalities"):
        new_plugin("ok", kind="fusion", modality="text", out=tmp_path / "x", registry=registry)
    with pytest.raises(MmplugError, match="modality 'word' is registered by toy"):
        from .conftest import Plugin

        host = load_plugins(entry_points=False)
        host.add(Plugin(register_modalities=[(("word", "m:W"), {})]), name="toy")
        new_plugin("ok", modality="word", out=tmp_path / "x", registry=host.registry)
    # --modality names the modality a --kind modality package writes
    named = new_plugin(
        "sensors", kind="modality", modality="vib", out=tmp_path / "vib", registry=registry
    )
    assert 'register(\n        "vib",' in (named / "mmplug_sensors" / "__init__.py").read_text()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(MmplugError, match="already exists and is not empty"):
        new_plugin("ok", out=tmp_path / "full", registry=registry)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_new_plugin_writes_the_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mmplug", "new-plugin", "chars", "--kind", "fusion"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote mmplug-chars/" in result.stdout
    assert (tmp_path / "mmplug-chars" / "mmplug_chars" / "fusion.py").is_file()
    pyproject = (tmp_path / "mmplug-chars" / "pyproject.toml").read_text()
    assert '[project.entry-points.mmplug]\nchars = "mmplug_chars"' in pyproject
    again = subprocess.run(
        [sys.executable, "-m", "mmplug", "new-plugin", "chars"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
