"""The conformance kit: checks every mmplug component must pass, runnable from pytest.

A plugin's whole conformance test is a few lines::

    # tests/test_conformance.py
    from mmplug.testing import Conformance

    conformance = Conformance(
        "mmplug-tabular",  # check every component this distribution registers
        samples={"tabular": [[0.5, 1.0, 2.0], [3.0, -1.0, 0.0], [1.0, 1.0, 1.0]]},
        params={"tabular-mlp": {"num_features": 3}},
    )


    @conformance.parametrize()
    def test_conformance(check):
        check()

Each (component, check) pair is its own test, with an id such as
``encoder:tabular-mlp:batch_independent``, so ``pytest -k batch_independent`` works.
A failing check raises ``AssertionError`` naming the component and what was expected
against what was found. The checks themselves are in :mod:`mmplug.testing.checks`.

The kit is also a pytest plugin (entry point ``mmplug`` in group ``pytest11``, see
:mod:`mmplug.testing.pytest_plugin`), loaded wherever mmplug is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest
    from torch import Tensor

    from mmplug.plugins.registry import ComponentSpec, Registry

# Imported on use, not here: pytest imports this package (for its plugin) in every session
# wherever mmplug is installed, and the registry brings pydantic.


#: Samples of one modality: the values themselves, or a function that makes them (files
#: written on demand, images drawn with PIL).
SampleSource = Sequence[Any] | Callable[[], Sequence[Any]]


@dataclass
class Conformance:
    """The conformance checks for a set of registered components.

    Args:
        distribution: check the components this distribution registers (``mmplug-text``);
            None checks every component of the registry.
        samples: modality name -> at least two values of that modality, as a manifest or a
            Python caller gives them (they go through the modality's ``load``). Give values of
            different sizes (a short and a long text): batch independence is checked on them.
        params: component name -> params to build it with, on top of its defaults: required
            params, and small sizes that keep the checks fast.
        bad_values: modality name -> values its loader must reject with ``DataError``, on top
            of an ``object()``, which every loader must reject.
        targets: head task -> ``make(outputs)`` returning targets for ``loss(outputs, ...)``,
            for tasks other than ``classification``, ``multilabel`` and ``regression``.
        skip: component name -> why its checks are skipped (shown by pytest).
        registry: where components are looked up; defaults to a fresh load of the installed
            plugins.
        plugins: plugin objects to load after the installed ones (a plugin under development
            that is not installed yet).
    """

    distribution: str | None = None
    samples: Mapping[str, SampleSource] = field(default_factory=dict)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    bad_values: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    targets: Mapping[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    skip: Mapping[str, str] = field(default_factory=dict)
    registry: Registry | None = None
    plugins: Sequence[object] = ()

    @cached_property
    def host_registry(self) -> Registry:
        """The registry checked: the one given, or the installed plugins loaded afresh."""
        if self.registry is not None:
            return self.registry
        from mmplug.plugins.loading import load_plugins
        from mmplug.plugins.registry import normalize_distribution

        host = load_plugins(extra=self.plugins)
        wanted = normalize_distribution(self.distribution or "")
        broken = [r for r in host.failures if normalize_distribution(r.distribution) == wanted]
        if broken:
            raise LookupError("; ".join(record.failure() for record in broken))
        return host.registry

    def components(self) -> list[ComponentSpec]:
        """The components checked, in registry order (kind, then name)."""
        from mmplug.plugins.registry import normalize_distribution

        specs = self.host_registry.components()
        if self.distribution is None:
            return specs
        wanted = normalize_distribution(self.distribution)
        return [s for s in specs if normalize_distribution(s.distribution) == wanted]

    def checks(self) -> list[Check]:
        """Every (component, check) pair."""
        from mmplug.testing.checks import CHECKS

        found = [
            Check(self, spec, name, function)
            for spec in self.components()
            for name, function in CHECKS[spec.kind].items()
        ]
        if self.distribution is not None and not found:
            raise LookupError(
                f"no component is registered by distribution {self.distribution!r}: is it "
                "installed (pip install -e .) and does its entry point load "
                "(mmplug plugins)?"
            )
        return found

    def parametrize(self, argname: str = "check") -> pytest.MarkDecorator:
        """A ``pytest.mark.parametrize`` over :meth:`checks`, one test id per check."""
        import pytest

        params = [
            pytest.param(
                check,
                id=check.id,
                marks=[pytest.mark.skip(reason=check.skip_reason)] if check.skip_reason else [],
            )
            for check in self.checks()
        ]
        return pytest.mark.parametrize(argname, params)

    # -- what checks need -------------------------------------------------------------------

    def params_for(self, spec: ComponentSpec) -> dict[str, Any]:
        """The params given for ``spec``, by qualified or bare name."""
        for key in (spec.qualified_name, spec.name):
            if key in self.params:
                return dict(self.params[key])
        return {}

    def samples_for(self, modality: str) -> list[Any]:
        """The sample values of a modality (calling the factory if one was given)."""
        source = self.samples.get(modality)
        if source is None:
            raise AssertionError(
                f"no samples for modality {modality!r}: give Conformance(samples="
                f"{{{modality!r}: [value, value, ...]}}) with at least two values"
            )
        values = list(source() if callable(source) else source)
        if len(values) < 2:
            raise AssertionError(
                f"samples for modality {modality!r}: give at least two values, got {len(values)}"
            )
        return values

    def skip_reason(self, spec: ComponentSpec) -> str | None:
        for key in (spec.qualified_name, spec.name):
            if key in self.skip:
                return self.skip[key]
        return None


@dataclass(frozen=True)
class Check:
    """One check of one component; call it to run it.

    Attributes:
        id: ``kind:name:check`` (the pytest id).
    """

    conformance: Conformance = field(repr=False)
    spec: ComponentSpec
    name: str
    function: Callable[[Conformance, ComponentSpec], None] = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.spec.kind}:{self.spec.name}:{self.name}"

    @property
    def skip_reason(self) -> str | None:
        return self.conformance.skip_reason(self.spec)

    def __call__(self) -> None:
        self.function(self.conformance, self.spec)


__all__ = ["Check", "Conformance", "SampleSource"]
