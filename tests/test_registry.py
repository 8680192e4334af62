"""The registry: registration rules, lookup, duplicates, unknown names, listing."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import mmplug
from mmplug.errors import DuplicateComponentError, UnknownComponentError
from mmplug.plugins.host import PluginHost
from mmplug.plugins.params import NoParams
from mmplug.plugins.registry import Registry

from .conftest import Plugin


def encoders(*names: str, modality: str = "text") -> Plugin:
    return Plugin(
        register_encoders=[((name, "pkg.mod:Cls"), {"modality": modality}) for name in names]
    )


def test_registered_component_records_its_origin(host: PluginHost) -> None:
    class Params(BaseModel):
        width: int = 3

    host.add(
        Plugin(
            register_encoders=[
                (
                    ("bert", "pkg.mod:Bert"),
                    {"params": Params, "modality": "text", "summary": "BERT"},
                )
            ]
        ),
        name="text",
        distribution="mmplug-text",
        version="1.2.3",
    )
    spec = host.registry.get("encoder", "bert")
    assert (spec.kind, spec.name, spec.modality, spec.summary) == (
        "encoder",
        "bert",
        "text",
        "BERT",
    )
    assert (spec.distribution, spec.version, spec.params) == ("mmplug-text", "1.2.3", Params)
    assert spec.qualified_name == "mmplug-text:bert"


def test_summary_is_not_inherited_from_the_interface(host: PluginHost) -> None:
    class Undocumented(mmplug.Encoder):
        pass

    host.add(Plugin(register_encoders=[(("plain", Undocumented), {"modality": "text"})]))
    assert host.registry.get("encoder", "plain").summary == ""


def test_params_default_to_none_and_summary_to_docstring(host: PluginHost) -> None:
    def make_head(input_dim: int) -> None:
        """A head made by a function.

        More text that is not part of the summary.
        """

    host.add(Plugin(register_heads=[(("fn-head", make_head), {})]))
    spec = host.registry.get("head", "fn-head")
    assert spec.params is NoParams
    assert spec.summary == "A head made by a function."


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("BERT", "m:a"), {"modality": "text"}, "invalid encoder name 'BERT'"),
        (("bert base", "m:a"), {"modality": "text"}, "invalid encoder name"),
        (("bert", "not a path"), {"modality": "text"}, "is not a 'module:attribute' path"),
        (("bert", 42), {"modality": "text"}, "factory must be callable"),
        (("bert", "m:a"), {"modality": "text", "params": dict}, "params must be a pydantic"),
        (("bert", "m:a"), {}, "modality= must name the modality"),
    ],
)
def test_contract_violations_fail_the_plugin_with_a_clear_error(
    host: PluginHost, args: tuple, kwargs: dict, message: str
) -> None:
    record = host.add(Plugin(register_encoders=[(args, kwargs)]), name="bad")
    assert record.status == "failed"
    assert message in (record.error or "")
    assert len(host.registry) == 0


def test_only_encoders_take_a_modality(host: PluginHost) -> None:
    record = host.add(Plugin(register_heads=[(("h", "m:a"), {"modality": "text"})]))
    assert record.status == "failed"
    assert "only encoders take modality=" in (record.error or "")


def test_params_may_not_use_the_name_field(host: PluginHost) -> None:
    class Params(BaseModel):
        name: str = "x"

    record = host.add(Plugin(register_heads=[(("h", "m:a"), {"params": Params})]))
    assert "may not have a field called 'name'" in (record.error or "")


def test_kinds_have_separate_namespaces(host: PluginHost) -> None:
    host.add(
        Plugin(
            register_modalities=[(("text", "m:Text"), {})],
            register_encoders=[(("text", "m:Enc"), {"modality": "text"})],
        )
    )
    assert host.registry.get("modality", "text").kind == "modality"
    assert host.registry.get("encoder", "text").kind == "encoder"
    assert [s.kind for s in host.registry.find("text")] == ["modality", "encoder"]


def test_bare_name_of_two_distributions_is_ambiguous_naming_both(host: PluginHost) -> None:
    host.add(encoders("bert"), name="a", distribution="mmplug-text", version="1.0")
    host.add(encoders("bert"), name="b", distribution="acme-nlp", version="2.0")
    with pytest.raises(DuplicateComponentError) as info:
        host.registry.get("encoder", "bert")
    message = str(info.value)
    assert "mmplug-text 1.0" in message and "acme-nlp 2.0" in message
    assert "acme-nlp:bert" in message and "mmplug-text:bert" in message
    # The qualified name always resolves, in any spelling of the distribution.
    assert host.registry.get("encoder", "acme-nlp:bert").distribution == "acme-nlp"
    assert host.registry.get("encoder", "Mmplug_Text:bert").distribution == "mmplug-text"


def test_same_distribution_registering_a_name_twice_fails_that_plugin_only(
    host: PluginHost,
) -> None:
    good = host.add(encoders("roberta"), name="good", distribution="good-dist")
    bad = host.add(encoders("bert", "bert"), name="bad", distribution="bad-dist")
    assert good.status == "loaded"
    assert bad.status == "failed" and "registered twice by bad-dist" in (bad.error or "")
    # Nothing of the failed plugin is left half-registered.
    assert host.registry.names("encoder") == ["roberta"]


def test_unknown_name_suggests_close_matches(host: PluginHost) -> None:
    host.add(encoders("resnet18", "resnet50", "bert", modality="image"))
    with pytest.raises(UnknownComponentError) as info:
        host.registry.get("encoder", "resnet5")
    assert isinstance(info.value, KeyError)
    assert "did you mean 'resnet50'" in str(info.value)
    assert info.value.suggestions[0] == "resnet50"


def test_unknown_name_without_close_match_lists_what_exists(host: PluginHost) -> None:
    host.add(encoders("resnet18", "bert"))
    with pytest.raises(UnknownComponentError, match="known encoders: bert, resnet18"):
        host.registry.get("encoder", "wav2vec2")


def test_unknown_name_when_kind_is_empty_hints_at_installing(host: PluginHost) -> None:
    with pytest.raises(UnknownComponentError, match="no fusion is registered"):
        host.registry.get("fusion", "gated")


def test_unknown_distribution_prefix(host: PluginHost) -> None:
    host.add(encoders("bert"), name="t", distribution="mmplug-text")
    with pytest.raises(UnknownComponentError, match="did you mean 'mmplug-text:bert'"):
        host.registry.get("encoder", "mmplug-txt:bert")


def test_unknown_kind(host: PluginHost) -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'encoder'"):
        host.registry.get("encoders", "bert")


def test_listing_filters_by_kind_glob_and_modality(host: PluginHost) -> None:
    host.add(
        Plugin(
            register_modalities=[(("image", "m:I"), {}), (("text", "m:T"), {})],
            register_encoders=[
                (("resnet18", "m:R"), {"modality": "image"}),
                (("resnet50", "m:R"), {"modality": "image"}),
                (("bert", "m:B"), {"modality": "text"}),
            ],
            register_heads=[(("classification", "m:C"), {})],
        )
    )
    registry = host.registry
    assert [s.name for s in registry.components()] == [
        "image",
        "text",
        "bert",
        "resnet18",
        "resnet50",
        "classification",
    ]
    assert [s.name for s in registry.components("encoder", "resnet*")] == ["resnet18", "resnet50"]
    assert [s.name for s in registry.components(modality="image")] == [
        "image",
        "resnet18",
        "resnet50",
    ]
    assert [s.name for s in registry.components(pattern="*:bert")] == ["bert"]


def test_lazy_factory_is_imported_only_when_loaded(host: PluginHost) -> None:
    host.add(Plugin(register_heads=[(("lazy", "collections:OrderedDict"), {})]))
    spec = host.registry.get("head", "lazy")
    assert spec.factory == "collections:OrderedDict"
    import collections

    assert spec.load_factory() is collections.OrderedDict


def test_names_sort_numbers_by_value() -> None:
    registry = Registry()
    register = registry.register_fn("encoder", distribution="acme", version="1", plugin="acme:x")
    for name in ("resnet152", "resnet18", "resnet101", "bert", "resnet50"):
        register(name, "acme.m:Encoder", modality="image")
    expected = ["bert", "resnet18", "resnet50", "resnet101", "resnet152"]
    assert registry.names("encoder") == expected
    assert [spec.name for spec in registry.components("encoder")] == expected
