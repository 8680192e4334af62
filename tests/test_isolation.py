"""A broken plugin stays with itself: whatever it raises (SystemExit included), a damaged
distribution, a name in MMPLUG_LOAD_PLUGINS/MMPLUG_DISABLE_PLUGINS that is not installed,
and how all of these reach a user: one ``mmplug: warning:`` line each, printed once."""

from __future__ import annotations

import argparse
import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import GOOD, FakeDist, cli
from training_helpers import toy_config, toy_data

import mmplug
from mmplug.errors import MmplugWarning, PluginLoadError
from mmplug.plugins import loading
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import as_default_host, default_host, discover, load_plugins

EXIT_AT_IMPORT = "import sys\nsys.exit('acme_exit refuses to load')\n"


def in_hook(raised: str, *, preamble: str = "") -> str:
    """A plugin that registers a modality, then raises ``raised`` in register_encoders."""
    return f"""
import mmplug
{preamble}

@mmplug.hookimpl
def register_modalities(register):
    register("half", "somewhere:Half")

@mmplug.hookimpl
def register_encoders(register):
    raise {raised}
"""


CUSTOM = "class Custom(BaseException):\n    pass\n"
BROKEN_STR = (
    "class Weird(Exception):\n    def __str__(self):\n        raise ValueError('no text')\n"
)

ISOLATED = {
    "SystemExit at import": (EXIT_AT_IMPORT, "failed to import: SystemExit: acme_exit refuses"),
    "SystemExit() at import": ("raise SystemExit\n", "failed to import: SystemExit"),
    "custom BaseException at import": (
        f"{CUSTOM}raise Custom('gone')\n",
        "failed to import: Custom: gone",
    ),
    "broken __str__ at import": (f"{BROKEN_STR}raise Weird()\n", "Weird: <str() raised Value"),
    "SystemExit in a hook": (in_hook("SystemExit(3)"), "register_encoders raised SystemExit: 3"),
    "GeneratorExit in a hook": (in_hook("GeneratorExit()"), "raised GeneratorExit"),
    "custom BaseException in a hook": (
        in_hook("Custom('stop')", preamble=CUSTOM),
        "register_encoders raised Custom: stop",
    ),
    "broken __str__ in a hook": (
        in_hook("Weird()", preamble=BROKEN_STR),
        "register_encoders raised Weird: <str() raised ValueError>",
    ),
}


@pytest.mark.parametrize("case", sorted(ISOLATED))
def test_whatever_a_plugin_raises_is_isolated(fake_dist: FakeDist, case: str) -> None:
    source, expected = ISOLATED[case]
    fake_dist("mmplug-bad", "1.0", source)
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    host = load_plugins(path=[fake_dist.site], environ={})
    [bad] = [r for r in host.records if r.distribution == "mmplug-bad"]
    assert bad.status == "failed"
    assert bad.error is not None and expected in bad.error
    assert "\n" not in bad.failure() and bad.failure().startswith("plugin 'bad' (mmplug-bad 1.0)")
    assert [s.name for s in host.registry.components("modality")] == []  # 'half' rolled back
    assert host.registry.get("encoder", "char-cnn").distribution == "mmplug-chars"


@pytest.mark.parametrize("where", ["import", "hook"])
def test_strict_mode_turns_a_system_exit_into_a_plugin_load_error(
    fake_dist: FakeDist, where: str
) -> None:
    fake_dist("mmplug-bad", "1.0", EXIT_AT_IMPORT if where == "import" else in_hook("SystemExit"))
    with pytest.raises(
        PluginLoadError, match=r"plugin 'bad' from mmplug-bad 1\.0 .*SystemExit"
    ) as e:
        load_plugins(path=[fake_dist.site], environ={"MMPLUG_STRICT_PLUGINS": "1"})
    assert isinstance(e.value.__cause__, SystemExit)


@pytest.mark.parametrize(
    "source", ["raise KeyboardInterrupt\n", in_hook("KeyboardInterrupt")], ids=["import", "hook"]
)
def test_keyboard_interrupt_still_stops_loading(fake_dist: FakeDist, source: str) -> None:
    fake_dist("mmplug-bad", "1.0", source)
    with pytest.raises(KeyboardInterrupt):
        load_plugins(path=[fake_dist.site], environ={})


def commands_raising(raised: BaseException) -> object:
    class Commands:
        @mmplug.hookimpl
        def register_commands(self, cli: Any) -> None:
            cli.add_parser("half-added")
            raise raised

    return Commands()


def test_register_commands_that_exits_loses_its_commands_only(host: PluginHost) -> None:
    host.add(commands_raising(SystemExit(2)), name="acme-cmds")
    commands = argparse.ArgumentParser().add_subparsers()
    problems = host.add_commands(commands)
    assert problems == [
        "plugin 'acme-cmds' (acme-cmds 0): its commands are left out: register_commands raised "
        "SystemExit: 2"
    ]
    assert "half-added" not in commands.choices
    with pytest.raises(KeyboardInterrupt):
        fresh = PluginHost()
        fresh.add(commands_raising(KeyboardInterrupt()), name="acme-cmds")
        fresh.add_commands(argparse.ArgumentParser().add_subparsers())


# -- names in MMPLUG_LOAD_PLUGINS / MMPLUG_DISABLE_PLUGINS ------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "MMPLUG_DISABLE_PLUGINS",
            "mmplug-txt",
            "MMPLUG_DISABLE_PLUGINS names mmplug-txt, which is not an installed plugin "
            "(did you mean mmplug-text?)",
        ),
        (
            "MMPLUG_LOAD_PLUGINS",
            "mmplug-text, chrs",
            "MMPLUG_LOAD_PLUGINS names chrs, which is not an installed plugin "
            "(did you mean chars?)",
        ),
        (
            "MMPLUG_LOAD_PLUGINS",
            "Zebra_Stripes,zebra-stripes",
            "MMPLUG_LOAD_PLUGINS names Zebra_Stripes, which is not an installed plugin",
        ),
    ],
)
def test_a_name_no_plugin_has_is_a_problem_with_a_close_match(
    fake_dist: FakeDist, variable: str, value: str, expected: str
) -> None:
    fake_dist("mmplug-text", "1.0", GOOD)
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    host = load_plugins(path=[fake_dist.site], environ={variable: value})
    assert host.problems == [expected]


def test_names_of_installed_plugins_and_core_are_no_problem(fake_dist: FakeDist) -> None:
    fake_dist("mmplug-text", "1.0", GOOD)
    # by distribution, unnormalized, by entry-point name, and core, which always loads
    environ = {"MMPLUG_LOAD_PLUGINS": "MMPLUG_Text,mmplug", "MMPLUG_DISABLE_PLUGINS": "text"}
    assert load_plugins(path=[fake_dist.site], environ=environ).problems == []


DAMAGED = {"[mmplug]\nno equals sign\n": True, "[console_scripts]\nno equals sign\n": False}


@pytest.mark.parametrize("text", sorted(DAMAGED))
def test_a_distribution_with_damaged_entry_points_is_left_out(
    fake_dist: FakeDist, text: str
) -> None:
    fake_dist("mmplug-chars", "0.3.1", GOOD)
    fake_dist("mmplug-damaged", "1.0", GOOD)
    info = next(Path(fake_dist.site).glob("mmplug_damaged-*.dist-info"))
    (info / "entry_points.txt").write_text(text)
    assert [p.distribution for p in discover([fake_dist.site])] == ["mmplug-chars"]
    host = load_plugins(path=[fake_dist.site], environ={})
    assert host.registry.get("encoder", "char-cnn").distribution == "mmplug-chars"
    ours = DAMAGED[text]  # someone else's damaged entry points are not ours to report
    assert len(host.problems) == ours
    if ours:
        assert "mmplug_damaged-1.0.dist-info: its entry points can't be read" in host.problems[0]
        with pytest.raises(PluginLoadError, match="its entry points can't be read"):
            load_plugins(path=[fake_dist.site], environ={"MMPLUG_STRICT_PLUGINS": "1"})


# -- the process-wide host ---------------------------------------------------------------------


def test_default_host_reports_failures_and_problems_once_as_mmplug_warnings(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("mmplug-bad", "1.0", EXIT_AT_IMPORT)
    monkeypatch.setenv("MMPLUG_LOAD_PLUGINS", "mmplug-bad,mmplug-bda")
    monkeypatch.delenv("MMPLUG_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("MMPLUG_STRICT_PLUGINS", raising=False)
    monkeypatch.setattr(loading, "_default_host", None)
    with pytest.warns(MmplugWarning) as caught:
        host = default_host()
    assert [str(w.message) for w in caught] == [
        "plugin 'bad' (mmplug-bad 1.0) failed to import: SystemExit: acme_exit refuses to load; "
        "it is not loaded",
        "MMPLUG_LOAD_PLUGINS names mmplug-bda, which is not an installed plugin "
        "(did you mean mmplug-bad?)",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert default_host() is host  # loaded, and reported, once


def test_as_default_host_lends_a_host_to_the_public_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = PluginHost()
    monkeypatch.setattr(loading, "_default_host", before)
    lent = load_plugins(entry_points=False)
    with as_default_host(lent):
        assert default_host() is lent
        assert loading.default_registry() is lent.registry
    assert default_host() is before


# -- as users see it: the command line and an author's pytest session ------------------------


EXITING_COMMANDS = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    cli.add_parser("bye")
    raise SystemExit(0)
"""


def plugin_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "plugin 'exit'" in line]


@pytest.mark.parametrize("source", [EXIT_AT_IMPORT, in_hook("SystemExit(3)"), EXITING_COMMANDS])
def test_list_survives_a_plugin_that_exits(
    fake_dist: FakeDist, tmp_path: Path, source: str
) -> None:
    fake_dist("acme-nlp", "2.1.0", GOOD, entry_point="nlp")
    fake_dist("acme-exit", "0.1", source, entry_point="exit")
    site = Path(fake_dist.site)
    result = cli(site, "list", cwd=tmp_path, MMPLUG_LOAD_PLUGINS="acme-nlp,acme-exit")
    assert result.returncode == 0, result.stderr
    assert "char-cnn" in result.stdout and "acme-nlp" in result.stdout
    [line] = plugin_warnings(result.stderr)
    assert line.startswith("mmplug: warning: plugin 'exit' (acme-exit 0.1)")
    assert "SystemExit" in line and "Traceback" not in result.stderr


def test_a_name_not_installed_warns_on_every_command(fake_dist: FakeDist, tmp_path: Path) -> None:
    fake_dist("acme-nlp", "2.1.0", GOOD, entry_point="nlp")
    site = Path(fake_dist.site)
    expected = (
        "mmplug: warning: MMPLUG_DISABLE_PLUGINS names acme-nl, which is not an installed "
        "plugin (did you mean acme-nlp?)\n"
    )
    only = {"MMPLUG_LOAD_PLUGINS": "acme-nlp"}
    for command in ("list", "plugins"):
        result = cli(site, command, cwd=tmp_path, MMPLUG_DISABLE_PLUGINS="acme-nl", **only)
        assert (result.returncode, result.stderr) == (0, expected)
    correct = cli(site, "list", cwd=tmp_path, MMPLUG_DISABLE_PLUGINS="acme-nlp", **only)
    assert (correct.returncode, correct.stderr) == (0, "")


def install(site: Path, distribution: str, source: str, *, entry_point: str) -> Path:
    """``distribution`` 0.1 in ``site``: a dist-info and its module (a tmp_path of any scope,
    where conftest's ``fake_dist`` has a test's)."""
    module = distribution.replace("-", "_")
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mmplug]\n{entry_point} = {module}\n")
    return site


@pytest.fixture(scope="module")
def broken_run(toy_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run trained with ``mmplug train`` with a plugin installed that exits at import:
    (the folder holding config.yaml, data/ and run/; the environment for ``cli``)."""
    root = tmp_path_factory.mktemp("broken")
    broken = install(root / "site", "acme-exit", EXIT_AT_IMPORT, entry_point="exit")
    env = {
        "MMPLUG_LOAD_PLUGINS": "toy-plugin,acme-exit",
        "PYTHONPATH": f"{toy_site}{os.pathsep}{broken}",
    }
    data = toy_data(root / "data", train=16, val=8, test=8)
    (root / "config.yaml").write_text(yaml.safe_dump(toy_config(data, epochs=1)))
    return root, env


COMMANDS = {
    "train": ["train", "config.yaml", "--out", "run", "--quiet"],
    "validate": ["validate", "config.yaml"],
    "evaluate": ["evaluate", "run", "--data", "data/test.jsonl"],
    "predict": ["predict", "run", "--stats", "1,0,0,1", "--word", "cat"],
}


@pytest.mark.parametrize("command", list(COMMANDS))  # train first: the others use its run
def test_a_broken_plugin_is_one_warning_line_for_every_command(
    toy_site: Path, broken_run: tuple[Path, dict], command: str
) -> None:
    root, env = broken_run
    if command != "train" and not (root / "run").is_dir():
        cli(toy_site, *COMMANDS["train"], cwd=root, **env)
    result = cli(toy_site, *COMMANDS[command], cwd=root, **env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert plugin_warnings(result.stderr) == [
        "mmplug: warning: plugin 'exit' (acme-exit 0.1) failed to import: SystemExit: "
        "acme_exit refuses to load; see 'mmplug plugins'"
    ]
    assert "UserWarning" not in result.stderr


VALIDATES = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    command = cli.add_parser("check")
    command.add_argument("config")
    # no registry: the installed plugins', as a plugin's command might use them
    command.set_defaults(run=lambda args: print(mmplug.validate(args.config).head.spec.name) or 0)
"""


def test_a_plugin_command_using_the_installed_plugins_reports_failures_once(
    toy_site: Path, broken_run: tuple[Path, dict], tmp_path: Path
) -> None:
    site = install(tmp_path / "site", "acme-check", VALIDATES, entry_point="check")
    install(site, "acme-broken", "raise ImportError('needs libfoo')\n", entry_point="broken")
    env = {
        "MMPLUG_LOAD_PLUGINS": "toy-plugin,acme-check,acme-broken",
        "PYTHONPATH": f"{toy_site}{os.pathsep}{site}",
    }
    result = cli(toy_site, "check", "config.yaml", cwd=broken_run[0], **env)
    assert (result.returncode, result.stdout) == (0, "classification\n"), result.stderr
    assert result.stderr == (
        "mmplug: warning: plugin 'broken' (acme-broken 0.1) failed to import: ImportError: "
        "needs libfoo; see 'mmplug plugins'\n"
    )


AUTHOR = """
import mmplug

@mmplug.hookimpl
def register_heads(register):
    pass  # nothing yet: the kit checks the entry-point module only
"""

AUTHOR_TESTS = """
from mmplug.testing import Conformance

conformance = Conformance("acme-author")  # loads the installed plugins when collected


@conformance.parametrize()
def test_conformance(check):
    check()


def test_the_fixture_reports_the_broken_plugin(mmplug_host):
    [record] = [r for r in mmplug_host.records if r.distribution == "acme-exit"]
    assert record.status == "failed" and "SystemExit" in record.error
"""


def test_an_authors_pytest_session_survives_a_plugin_that_exits(
    pytester: pytest.Pytester, fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("acme-author", "0.1", AUTHOR, entry_point="author")
    fake_dist("acme-exit", "0.1", EXIT_AT_IMPORT, entry_point="exit")
    monkeypatch.setenv("PYTHONPATH", fake_dist.site)
    monkeypatch.setenv("MMPLUG_LOAD_PLUGINS", "acme-author,acme-exit")
    pytester.makepyfile(test_author=AUTHOR_TESTS)
    result = pytester.runpytest_subprocess()
    assert "INTERNALERROR" not in result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 2 and set(outcomes) <= {"passed", "skipped"}, outcomes
    result.stdout.fnmatch_lines(["mmplug * (plugin API *), plugins: acme-author 0.1, acme-exit*"])
