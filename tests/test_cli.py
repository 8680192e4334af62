"""The mmplug command, run as a user runs it: a subprocess, with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmplug

from .conftest import FakeDist, environ_without_settings

PLUGIN = """
from pydantic import BaseModel, Field
import mmplug

class BertParams(BaseModel):
    pooling: str = Field(default="cls", description="How tokens become one vector.")
    max_length: int = Field(default=128, ge=1, description="Truncation length.")

@mmplug.hookimpl
def register_modalities(register):
    register("text", "acme_nlp.modality:Text", summary="Strings")

@mmplug.hookimpl
def register_encoders(register):
    register("bert", "acme_nlp.bert:Bert", params=BertParams, modality="text",
             summary="BERT [base] encoder")

@mmplug.hookimpl
def register_fusions(register):
    register("gated", "acme_nlp.fusion:Gated", summary="Gated unit")
"""

BROKEN = "raise ImportError('acme_broken needs libfoo')\n"

CONFIG = """\
model:
  encoders:
    text: {name: bert, pooling: mean}
  fusion: {name: gated}
  head: {name: classification, num_classes: 3}
"""


def run(*args: str, site: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``mmplug ARGS`` with only the fake distributions in ``site`` selected, so that the
    plugins installed in the environment (this repository's own) don't change what it prints
    (and a name selected that is not installed, a warning, is never one by accident)."""
    environ = environ_without_settings()
    fakes = sorted(info.name.split("-")[0] for info in Path(site or ".").glob("*.dist-info"))
    environ["MMPLUG_LOAD_PLUGINS"] = ",".join(fakes) if site else ""
    environ.update(env)
    if site:
        environ["PYTHONPATH"] = site
    return subprocess.run(
        [sys.executable, "-m", "mmplug", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


@pytest.fixture
def site(fake_dist: FakeDist) -> str:
    fake_dist("acme-nlp", "2.1.0", PLUGIN, entry_point="nlp")
    return fake_dist.site


def test_list_json_has_exactly_the_documented_keys(site: str) -> None:
    result = run("list", "--json", site=site)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all(
        set(row) == {"kind", "name", "modality", "distribution", "version", "summary"}
        for row in rows
    )
    bert = next(row for row in rows if row["name"] == "bert")
    assert bert == {
        "kind": "encoder",
        "name": "bert",
        "modality": "text",
        "distribution": "acme-nlp",
        "version": "2.1.0",
        "summary": "BERT [base] encoder",
    }


def test_list_filters(site: str) -> None:
    def names(*args: str) -> list[str]:
        return [r["name"] for r in json.loads(run("list", *args, "--json", site=site).stdout)]

    assert names("head") == ["classification", "multilabel", "regression"]
    assert names("heads", "*label*") == ["multilabel"]
    assert names("b*") == ["bert"]
    assert names("--modality", "text") == ["text", "bert"]


def test_list_table(site: str) -> None:
    result = run("list", "encoder", site=site)
    assert result.returncode == 0
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["kind", "name", "modality", "distribution", "version", "summary"]
    assert row.split() == [
        "encoder",
        "bert",
        "text",
        "acme-nlp",
        "2.1.0",
        "BERT",
        "[base]",
        "encoder",
    ]


def test_list_with_two_words_that_are_not_a_kind(site: str) -> None:
    result = run("list", "encodrs", "bert", site=site)
    assert result.returncode == 2
    assert result.stderr == "mmplug: error: unknown kind 'encodrs'; did you mean 'encoder'?\n"


def test_list_with_too_many_words(site: str) -> None:
    result = run("list", "head", "a", "b", site=site)
    assert result.returncode == 2
    assert (
        result.stderr == "mmplug: error: list takes at most a KIND and a PATTERN, got 'head a b'\n"
    )


def test_debug_flag_shows_tracebacks_only_when_on(site: str) -> None:
    assert "Traceback" not in run("info", "nothing", site=site, MMPLUG_DEBUG="0").stderr
    assert "Traceback" in run("info", "nothing", site=site, MMPLUG_DEBUG="1").stderr


def test_info_shows_params(site: str) -> None:
    result = run("info", "bert", site=site)
    assert result.returncode == 0, result.stderr
    assert "encoder bert  (acme-nlp 2.1.0)" in result.stdout
    assert "modality: text" in result.stdout
    assert [line.split()[:3] for line in result.stdout.splitlines() if "max_length" in line] == [
        ["max_length", "int", "128"]
    ]
    [info] = json.loads(run("info", "bert", "--json", site=site).stdout)
    assert info["params"][0] == {
        "name": "pooling",
        "type": "str",
        "default": "cls",
        "required": False,
        "description": "How tokens become one vector.",
    }
    [head] = json.loads(run("info", "mmplug:classification", "--json", site=site).stdout)
    num_classes = next(p for p in head["params"] if p["name"] == "num_classes")
    assert num_classes["required"] is False and num_classes["default"] is None
    assert "mmplug train fills it in" in num_classes["description"]


def test_info_of_a_name_used_by_two_kinds_shows_both(site: str) -> None:
    result = run("info", "text", site=site)
    assert "modality text  (acme-nlp 2.1.0)" in result.stdout
    assert (
        json.loads(run("info", "text", "--kind", "modality", "--json", site=site).stdout)[0]["kind"]
        == "modality"
    )


def test_unknown_name_exits_2_with_suggestion_and_no_traceback(site: str) -> None:
    result = run("info", "classifcation", site=site)
    assert result.returncode == 2
    assert result.stderr == (
        "mmplug: error: unknown component 'classifcation'; did you mean 'classification'?\n"
    )


def test_validate_good_config_prints_the_assembly(site: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    result = run("validate", str(config), site=site)
    assert result.returncode == 0, result.stderr
    assert f"{config}: valid" in result.stdout
    assert "model.encoders.text: bert (acme-nlp 2.1.0) [modality text]" in result.stdout
    assert 'pooling="mean", max_length=128' in result.stdout
    assert "model.head: classification (mmplug" in result.stdout


def test_validate_reports_every_error_and_exits_2(site: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    result = run(
        "validate",
        str(config),
        "model.encoders.text.pooling=[1]",
        "model.fusion.name=gatd",
        "model.head.num_classes=one",
        site=site,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"mmplug: error: invalid config in {config} (3 errors):"
    assert lines[1].startswith("  model.encoders.text.pooling: Input should be a valid string")
    assert lines[2] == "  model.fusion.name: unknown fusion 'gatd'; did you mean 'gated'?"
    assert lines[3].startswith("  model.head.num_classes: Input should be a valid integer")


def test_info_params_with_computed_or_non_json_defaults() -> None:
    from pydantic import BaseModel, Field

    from mmplug.plugins.registry import ComponentSpec

    class Params(BaseModel):
        a: int = 1
        b: int = Field(default_factory=lambda data: data["a"] + 1)
        scale: float = float("nan")

    spec = ComponentSpec("fusion", "f", "m:F", Params, "", None, "acme", "1", "acme:f")
    rows = {row["name"]: row for row in spec.param_rows()}
    assert rows["b"]["default"] == "<computed from other params>"
    assert rows["scale"]["default"] == "nan"
    json.dumps(rows, allow_nan=False)


def test_validate_missing_file(site: str) -> None:
    result = run("validate", "nowhere.yaml", site=site)
    assert (result.returncode, result.stderr) == (
        2,
        "mmplug: error: config file not found: nowhere.yaml\n",
    )


def test_plugins_reports_loaded_and_failed(site: str, fake_dist: FakeDist) -> None:
    fake_dist("acme-broken", "0.0.1", BROKEN, entry_point="broken")
    result = run("plugins", site=site)
    assert result.returncode == 0
    assert "acme-broken 0.0.1" in result.stdout and "failed" in result.stdout
    assert "error: failed to import: ImportError: acme_broken needs libfoo" in result.stdout
    assert "encoder: bert" in result.stdout
    records = {r["distribution"]: r for r in json.loads(run("plugins", "--json", site=site).stdout)}
    assert records["acme-nlp"]["status"] == "loaded"
    assert records["acme-nlp"]["components"] == ["modality:text", "encoder:bert", "fusion:gated"]
    assert records["acme-broken"]["status"] == "failed"
    assert records["mmplug"]["components"][:2] == ["fusion:late", "head:classification"]


def test_broken_plugin_warns_elsewhere_and_strict_mode_exits_2(
    site: str, fake_dist: FakeDist
) -> None:
    fake_dist("acme-broken", "0.0.1", BROKEN, entry_point="broken")
    result = run("list", site=site)
    assert result.returncode == 0
    assert "mmplug: warning: plugin 'broken' (acme-broken 0.0.1) failed to import" in result.stderr
    assert "bert" in result.stdout
    strict = run("list", site=site, MMPLUG_STRICT_PLUGINS="1")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "plugin 'broken' from acme-broken 0.0.1 failed to import" in strict.stderr


def test_disable_and_select_plugins(site: str) -> None:
    disabled = json.loads(
        run("plugins", "--json", site=site, MMPLUG_DISABLE_PLUGINS="acme-nlp").stdout
    )
    assert {r["distribution"]: r["status"] for r in disabled}["acme-nlp"] == "disabled"
    none = json.loads(run("list", "--json", site=site, MMPLUG_LOAD_PLUGINS="").stdout)
    assert {r["distribution"] for r in none} == {"mmplug"}


def test_no_command_and_bad_arguments_exit_2() -> None:
    assert run().returncode == 2
    assert run("list", "--frobnicate").returncode == 2


def test_console_script_and_module_agree() -> None:
    script = Path(sys.executable).with_name("mmplug")
    assert script.exists(), "the console script is installed next to the interpreter"
    via_script = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert via_script.stdout == run("--version").stdout
    assert via_script.stdout.startswith("mmplug ")


def test_listing_does_not_import_torch(site: str) -> None:
    code = "import sys; from mmplug.cli import main; main(['list']); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": site},
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_plugins_shows_api_versions_and_incompatible_plugins(
    site: str, fake_dist: FakeDist
) -> None:
    fake_dist("acme-future", "3.0", "MMPLUG_API_VERSION = 7\n" + PLUGIN, entry_point="future")
    result = run("plugins", site=site)
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"mmplug {mmplug.__version__}  api 1 ") for line in lines)
    assert "acme-future 3.0  api 7  [future -> " in result.stdout
    assert "incompatible" in result.stdout and "upgrade mmplug" in result.stdout
    listed = run("list", site=site)
    assert "plugin 'future' (acme-future 3.0) is written for plugin API 7" in listed.stderr


def test_param_types_read_as_a_user_writes_them() -> None:
    from typing import Annotated, Literal, Optional

    from pydantic import Field, PositiveInt

    from mmplug.plugins.params import type_name

    assert type_name(list[PositiveInt]) == "list[int]"
    assert type_name(Optional[Literal["base", "large"]]) == "'base' | 'large' | None"  # noqa: UP045
    assert type_name(Annotated[float, Field(ge=0)] | None) == "float | None"
    assert type_name(dict[str, int]) == "dict[str, int]"
    assert type_name(bool) == "bool"


COMMANDS = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    command = cli.add_parser("hello", help="say hello")
    command.add_argument("--name", default="world")
    command.set_defaults(run=lambda args: print(f"hello {args.name}, from "
                         f"{len(args.host.registry)} components") or 0)
"""

CLASHING = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    cli.add_parser("extra", help="added before the clash")
    cli.add_parser("train")  # taken by core
"""


def test_a_plugin_adds_a_command_with_the_loaded_host(fake_dist: FakeDist) -> None:
    fake_dist("acme-hello", "1.0", COMMANDS)
    result = run("hello", "--name", "you", site=fake_dist.site, MMPLUG_LOAD_PLUGINS="acme-hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello you, from 4 components")  # core: late + 3 heads
    assert "hello" in run("--help", site=fake_dist.site, MMPLUG_LOAD_PLUGINS="acme-hello").stdout


def test_a_plugin_whose_commands_clash_loses_them_all_and_nothing_else(
    fake_dist: FakeDist,
) -> None:
    fake_dist("acme-hello", "1.0", COMMANDS)
    fake_dist("acme-clash", "1.0", CLASHING)
    both = "acme-hello,acme-clash"
    listing = run("list", site=fake_dist.site, MMPLUG_LOAD_PLUGINS=both)
    assert listing.returncode == 0
    assert (
        "mmplug: warning: plugin 'acme-clash' (acme-clash 1.0): its commands are left out: "
        "register_commands raised ArgumentError" in listing.stderr
    )
    assert run("hello", site=fake_dist.site, MMPLUG_LOAD_PLUGINS=both).returncode == 0
    extra = run("extra", site=fake_dist.site, MMPLUG_LOAD_PLUGINS=both)
    assert extra.returncode == 2 and "invalid choice: 'extra'" in extra.stderr  # rolled back
    train = run("train", "--help", site=fake_dist.site, MMPLUG_LOAD_PLUGINS=both)
    assert train.returncode == 0 and "--resume" in train.stdout  # core's own train
    strict = run("list", site=fake_dist.site, MMPLUG_LOAD_PLUGINS=both, MMPLUG_STRICT_PLUGINS="1")
    assert strict.returncode == 2 and "its commands are left out" in strict.stderr


def test_the_confusion_matrix_names_each_class_once(capsys: pytest.CaptureFixture[str]) -> None:
    from mmplug.cli.running import print_confusion

    print_confusion([[3, 1], [0, 2]], ["0", "1"])
    numbered = capsys.readouterr().out.splitlines()
    assert numbered[1:] == ["       0   1", "   0   3   1", "   1   0   2"]
    print_confusion([[3, 1], [0, 2]], ["cat", "dog"])
    named = capsys.readouterr().out.splitlines()
    assert named[1:] == ["            0   1", "   0  cat   3   1", "   1  dog   0   2"]


FIRST = """
import mmplug

@mmplug.hookimpl
def register_commands(cli):
    cli.add_parser("greet", help="from {name}").set_defaults(run=lambda args: print("{name}") or 0)
"""


def test_when_two_plugins_add_one_command_the_first_loaded_keeps_it(fake_dist: FakeDist) -> None:
    fake_dist("acme-a", "1.0", FIRST.replace("{name}", "a"))
    fake_dist("acme-b", "1.0", FIRST.replace("{name}", "b"))
    for _ in range(3):  # the same every time, not in pluggy's set order
        result = run("greet", site=fake_dist.site, MMPLUG_LOAD_PLUGINS="acme-a,acme-b")
        assert result.stdout.strip() == "a"
        assert "plugin 'acme-b' (acme-b 1.0): its commands are left out" in result.stderr
