"""Config files, overrides, and validation against the registry: every error, with its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmplug.errors import ConfigError
from mmplug.model.config import Config, apply_overrides, load_config
from mmplug.model.resolve import resolve_model
from mmplug.plugins.host import PluginHost

from .conftest import Plugin

GOOD = {
    "model": {
        "encoders": {
            "word": {"name": "char-bag", "dim": 8},
            "stats": {"name": "mlp", "input_size": 3},
        },
        "fusion": {"name": "mean"},
        "head": {"name": "classification", "num_classes": 4},
    }
}


def paths(error: ConfigError) -> list[str]:
    return [issue.path for issue in error.issues]


def test_yaml_and_json_files_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(GOOD))
    (tmp_path / "c.yaml").write_text(
        "model:\n"
        "  encoders:\n"
        "    word: {name: char-bag, dim: 8}\n"
        "    stats: {name: mlp, input_size: 3}\n"
        "  fusion: {name: mean}\n"
        "  head: {name: classification, num_classes: 4}\n"
    )
    assert load_config(tmp_path / "c.json") == load_config(str(tmp_path / "c.yaml"))


def test_encoders_come_in_sorted_key_order() -> None:
    config = load_config(GOOD)
    assert list(config.model.encoders) == ["stats", "word"]


def test_model_section_alone_is_accepted() -> None:
    assert load_config(GOOD["model"]) == load_config(GOOD)


def test_resolves_names_and_fills_param_defaults(toy_host: PluginHost) -> None:
    resolved = resolve_model(load_config(GOOD), toy_host.registry)
    assert resolved.encoders["word"].kwargs() == {"buckets": 512, "dim": 8, "max_length": 32}
    assert resolved.modalities["word"].spec.name == "word"
    assert resolved.to_config()["head"] == {
        "name": "mmplug:classification",
        "hidden_dims": [],
        "dropout": 0.0,
        "num_classes": 4,
        "label_smoothing": 0.0,
    }


def test_every_error_is_reported_at_once_with_its_path(toy_host: PluginHost) -> None:
    config = load_config(
        {
            "model": {
                "encoders": {
                    "word": {"name": "char-bag", "dim": "wide", "bukets": 3},
                    "stats": {"name": "mpl"},
                },
                "fusion": {"name": "mean", "dim": -1},
                "head": {"name": "classification", "num_classes": 1},
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        resolve_model(config, toy_host.registry, source="run.yaml")
    error = info.value
    assert paths(error) == [
        "model.encoders.stats.name",
        "model.encoders.word.bukets",
        "model.encoders.word.dim",
        "model.fusion.dim",
        "model.head.num_classes",
    ]
    text = str(error)
    assert text.startswith("invalid config in run.yaml (5 errors):")
    assert "unknown encoder 'mpl'; did you mean 'mlp'?" in text
    assert "unknown parameter of encoder 'char-bag'; did you mean 'buckets'?" in text
    assert "model.encoders.word.dim: Input should be a valid integer" in text
    assert "(got 'wide')" in text
    assert "model.head.num_classes: Input should be greater than or equal to 2 (got 1)" in text


def test_structure_errors_have_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model": {"encoders": {"text": {}}, "fusion": "gated"}, "trian": {}})
    assert paths(info.value) == ["model.encoders.text.name", "model.fusion", "model.head", "trian"]
    assert "trian: unknown field" in str(info.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("Text", "invalid modality key 'Text': use lowercase letters"),
        ("1st", "invalid modality key '1st': use lowercase letters"),
        ("my.text", "invalid modality key 'my.text': use lowercase letters"),
        ("my-image", "invalid modality key 'my-image': use lowercase letters"),
        ("keys", "modality key 'keys' is reserved"),
        ("float", "modality key 'float' is reserved"),
    ],
)
def test_invalid_modality_key_is_reported_at_its_path(key: str, message: str) -> None:
    data = {"model": {**GOOD["model"], "encoders": {key: {"name": "mlp"}}}}
    with pytest.raises(ConfigError) as info:
        load_config(data)
    [issue] = info.value.issues
    assert issue.path == f"model.encoders.{key}"
    assert issue.message.startswith(message)


def test_reserved_keys_cover_every_attribute_of_torchs_module_dict() -> None:
    import json
    import re
    import subprocess
    import sys

    from mmplug.model.keys import _KEY_PATTERN, RESERVED_KEYS

    # A fresh interpreter: other tests import transformers, which adds methods to nn.Module
    # (assembly checks the running torch as well, so those keys are refused too).
    listing = "import json, torch; print(json.dumps(dir(torch.nn.ModuleDict())))"
    names = json.loads(subprocess.check_output([sys.executable, "-c", listing], text=True))
    attributes = {n for n in names if _KEY_PATTERN.match(n)}
    assert attributes <= RESERVED_KEYS, sorted(attributes - RESERVED_KEYS)
    assert all(re.match(r"^[a-z]", n) for n in RESERVED_KEYS)


def test_every_invalid_key_is_reported_with_other_errors() -> None:
    encoders = {"Text": {"name": "bert"}, "my-image": {"name": "resnet"}, "audio": {}}
    with pytest.raises(ConfigError) as info:
        load_config({"model": {**GOOD["model"], "encoders": encoders}})
    assert sorted(paths(info.value)) == [
        "model.encoders.Text",
        "model.encoders.audio.name",
        "model.encoders.my-image",
    ]


def test_encoder_whose_modality_is_not_registered(host: PluginHost) -> None:
    import mmplug

    class OnlyEncoder:
        @mmplug.hookimpl
        def register_encoders(self, register):
            register("lonely", "m:E", modality="smell")

    host.add(OnlyEncoder(), name="lonely", distribution="acme")
    config = load_config(
        {
            "model": {
                "encoders": {"nose": {"name": "lonely"}},
                "fusion": {"name": "x"},
                "head": {"name": "y"},
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        resolve_model(config, host.registry)
    assert "model.encoders.nose.name: encoder 'lonely' (acme) consumes modality 'smell'" in str(
        info.value
    )


def test_encoder_prefers_its_own_distributions_modality(host: PluginHost) -> None:
    text = ((("text", "m:Text"), {}),)
    bert = ((("bert", "m:Bert"), {"modality": "text"}),)
    host.add(
        Plugin(register_modalities=text, register_encoders=bert), name="a", distribution="mmplug-a"
    )
    host.add(Plugin(register_modalities=text), name="b", distribution="mmplug-b")
    config = load_config(
        {
            "model": {
                "encoders": {"text": {"name": "bert"}},
                "fusion": {"name": "f"},
                "head": {"name": "h"},
            }
        }
    )
    with pytest.raises(ConfigError) as info:  # fusion and head are unknown, the modality is fine
        resolve_model(config, host.registry)
    assert paths(info.value) == ["model.fusion.name", "model.head.name"]
    from mmplug.model.resolve import modality_of

    spec = host.registry.get("encoder", "bert")
    assert modality_of(host.registry, spec).distribution == "mmplug-a"


def test_overrides_set_nested_keys_with_yaml_values() -> None:
    data = apply_overrides(
        GOOD,
        [
            "model.fusion.name=gated",
            "model.head.hidden_dims=[64, 32]",
            "model.head.dropout=0.5",
            "model.encoders.text={name: bert}",
            "model.encoders.word.dim=16",
        ],
    )
    assert data["model"]["fusion"] == {"name": "gated"}
    assert data["model"]["head"]["hidden_dims"] == [64, 32]
    assert data["model"]["head"]["dropout"] == 0.5
    assert data["model"]["encoders"]["text"] == {"name": "bert"}
    assert data["model"]["encoders"]["word"] == {"name": "char-bag", "dim": 16}
    assert GOOD["model"]["fusion"] == {"name": "mean"}  # the input is left alone


def test_overrides_fill_an_empty_section() -> None:
    data = apply_overrides(
        {"model": {**GOOD["model"], "head": None}}, ["model.head.name=regression"]
    )
    assert data["model"]["head"] == {"name": "regression"}
    assert apply_overrides({"model": None}, ["model.fusion.name=mean"]) == {
        "model": {"fusion": {"name": "mean"}}
    }


def test_override_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(GOOD, ["model.fusion", "model.fusion.name.x=1", "=3", "model.head.x=[1,"])
    text = str(info.value)
    assert "override 'model.fusion' is not KEY=VALUE" in text
    assert "model.fusion.name is a str, not a mapping" in text
    assert "override '=3' is not KEY=VALUE" in text
    assert "is not valid YAML" in text
    assert len(info.value.issues) == 4


def test_override_errors_name_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    with pytest.raises(ConfigError, match=r"invalid config in .*c\.json: override 'oops'"):
        load_config(path, ["oops"])


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  encoders: {text: [\n")
    with pytest.raises(ConfigError, match=r"invalid config in .*broken.yaml: invalid YAML.*line 3"):
        load_config(broken)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"model": }')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON at line 1, column 11"):
        load_config(bad_json)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, not list"):
        load_config(listing)


def test_configs_cannot_execute_code(tmp_path: Path, toy_host: PluginHost) -> None:
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(unsafe)
    # A factory path in place of a name is just an unknown name.
    config = load_config({"model": {**GOOD["model"], "fusion": {"name": "os:system"}}})
    with pytest.raises(ConfigError, match=r"model\.fusion\.name: unknown fusion 'os:system'"):
        resolve_model(config, toy_host.registry)


def test_config_object_passes_through() -> None:
    config = Config.model_validate(GOOD)
    assert load_config(config) is config
    assert load_config(config, ["model.fusion.name=sum"]).model.fusion.name == "sum"
