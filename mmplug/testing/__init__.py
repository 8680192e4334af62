"""The conformance kit: checks every mmplug component must pass, runnable from pytest.

A plugin's whole conformance test is a few lines::

    # tests/test_conformance.py
    from mmplug.testing import Conformance

    conformance = Conformance(
        "mmplug-tabular",  # check every component this distribution registers
        samples={"tabular": [[0.5, 1.0, 2.0], [3.0, -1.0, 0.0], [1.0, 1.0, 1.0]]},
        params={"tabular-mlp": {"num_features": 3}},
        variants={"tabular-mlp": [{"hidden_dims": []}]},  # bugs hide behind other params
    )


    @conformance.parametrize()
    def test_conformance(check):
        check()

Each (component, params, check) is its own test, with an id such as
``encoder:tabular-mlp:batch_independent`` or, for a variant,
``encoder:tabular-mlp[hidden_dims=[]]:batch_independent``, so ``pytest -k`` selects them.
Besides the variants given, the kit tries each other value of every ``Literal``, ``bool`` or
``Enum`` param, one at a time (:mod:`mmplug.testing.variants`). The distribution's
entry-point modules are checked too (``plugin:tabular:imports_no_torch``).
A failing check raises ``AssertionError`` naming the component and what was expected against
what was found. The checks themselves are in :mod:`mmplug.testing.checks`.

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
        distribution: check the components (and entry-point modules) this distribution
            registers (``mmplug-text``); None checks every component of the registry.
        samples: modality name -> at least two values of that modality, as a manifest or a
            Python caller gives them (they go through the modality's ``load``). Give values of
            different sizes (a short and a long text): batch independence is checked on them.
        params: component name -> params to build it with, on top of its defaults: required
            params, and small sizes that keep the checks fast.
        variants: component name -> more param sets, each on top of ``params``; the checks
            run once more per variant (the code paths other params take). The kit makes one
            variant per other value of each ``Literal``, ``bool`` or ``Enum`` param by itself
            (:mod:`mmplug.testing.variants`); give here other values and combinations.
        skip_variants: component name -> a param (each of its values) or one variant as its
            test id writes it (``size=bert-base``) -> why the kit must not check it (it needs
            the network, it builds a billion parameters); its checks are skipped with that
            reason. An entry that matches no variant the kit makes is a ``LookupError``.
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
    variants: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    skip_variants: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
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

    def cases(self) -> list[Case]:
        """Every component with each of its param sets: the defaults, the variants given,
        then the ones the kit makes (:mod:`mmplug.testing.variants`), with the author's
        reason on those opted out of with ``skip_variants``.

        Raises:
            LookupError: an entry of ``skip_variants`` opts out of no variant the kit makes.
        """
        from mmplug.testing.variants import OptOuts, generated_variants

        specs = self.components()
        opt_outs = OptOuts(self.skip_variants)
        found = []
        for spec in specs:
            given = [dict(variant) for variant in self._lookup(self.variants, spec, ())]
            found += [Case(self, spec, variant) for variant in [{}, *given]]
            found += [
                Case(self, spec, variant, opted_out=opt_outs.reason(spec, variant))
                for variant in generated_variants(spec, self.params_for(spec), given)
            ]
        opt_outs.check_all_used(specs)
        return found

    def checks(self) -> list[Check]:
        """Every check: (component, params, check) pairs, then the entry-point modules'.

        A variant runs every check but those of :data:`~mmplug.testing.checks.DEFAULTS_ONLY`;
        one opted out of is a single skipped check, ``kind:name[variant]:opted_out``.
        """
        from mmplug.testing.checks import CHECKS, DEFAULTS_ONLY, PLUGIN_CHECKS

        found = []
        for case in self.cases():
            if case.opted_out is not None:
                reason = case.skip_reason or ""
                found.append(Check(case.id("opted_out"), _bind(_skip, reason), reason))
                continue
            found += [
                Check(case.id(name), _bind(function, case), case.skip_reason)
                for name, function in CHECKS[case.spec.kind].items()
                if not (case.variant and name in DEFAULTS_ONLY)
            ]
        found += [
            Check(f"plugin:{entry}:{name}", _bind(function, module), None)
            for entry, module in self.entry_modules()
            for name, function in PLUGIN_CHECKS.items()
        ]
        if self.distribution is not None and not found:
            raise LookupError(
                f"no component or entry point of distribution {self.distribution!r}: is it "
                "installed (pip install -e .) and does its entry point load "
                "(mmplug plugins)?"
            )
        return found

    def entry_modules(self) -> list[tuple[str, str]]:
        """``(entry-point name, module or module:object)`` of the distribution's installed
        plugins (core's default plugin modules for ``mmplug``); plugin objects given with
        ``plugins=`` are not installed and have none."""
        from mmplug.plugins.loading import CORE_DISTRIBUTION, DEFAULT_PLUGINS, discover
        from mmplug.plugins.registry import normalize_distribution

        wanted = normalize_distribution(self.distribution or "")
        found = []
        if self.distribution is None or wanted == CORE_DISTRIBUTION:
            found += [(module, module) for module in DEFAULT_PLUGINS]
        for plugin in discover():
            if self.distribution is None or normalize_distribution(plugin.distribution) == wanted:
                found.append((plugin.name, plugin.module))
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
        return dict(self._lookup(self.params, spec, {}))

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
        reason: str | None = self._lookup(self.skip, spec, None)
        return reason

    @staticmethod
    def _lookup(table: Mapping[str, Any], spec: ComponentSpec, default: Any) -> Any:
        for key in (spec.qualified_name, spec.name):
            if key in table:
                return table[key]
        return default


@dataclass(frozen=True)
class Case:
    """One component with one param set, as the checks build it.

    Attributes:
        kit: the conformance run (samples, params, targets).
        spec: the registered component.
        variant: params on top of the kit's ``params`` for it ({} for the defaults).
        opted_out: why the author does not have this variant checked (``skip_variants``).
    """

    kit: Conformance = field(repr=False)
    spec: ComponentSpec
    variant: Mapping[str, Any] = field(default_factory=dict)
    opted_out: str | None = None

    @property
    def label(self) -> str:
        """``pooling=mean,dim=null,hidden_dims=[6]``: the variant as ids and messages show it."""
        from mmplug.testing.variants import label

        return label(self.variant)

    @property
    def params(self) -> dict[str, Any]:
        """The params given: the kit's for this component, then the variant's."""
        return {**self.kit.params_for(self.spec), **self.variant}

    def who(self) -> str:
        """``encoder 'bert' (mmplug-text 0.1.0)``, plus ``with pooling=cls`` for a variant:
        how failures name the component."""
        spec = self.spec
        named = f"{spec.kind} {spec.name!r} ({spec.distribution} {spec.version})"
        return f"{named} with {self.label}" if self.variant else named

    def id(self, check: str) -> str:
        name = f"{self.spec.name}[{self.label}]" if self.variant else self.spec.name
        return f"{self.spec.kind}:{name}:{check}"

    @property
    def skip_reason(self) -> str | None:
        """The component's ``skip`` reason, else the variant's ``skip_variants`` one."""
        skipped = self.kit.skip_reason(self.spec)
        if skipped is None and self.opted_out is not None:
            return f"{self.who()}: opted out with skip_variants: {self.opted_out}"
        return skipped


@dataclass(frozen=True)
class Check:
    """One check, ready to run: call it.

    Attributes:
        id: ``kind:name:check`` (``kind:name[variant]:check``, ``plugin:entry:check``), the
            pytest id; ``kind:name[variant]:opted_out`` stands for the checks of a variant
            opted out of (``skip_variants``), and skips when run.
        run: runs the check; raises ``AssertionError`` when it fails.
        skip_reason: why it is skipped, if it is.
    """

    id: str
    run: Callable[[], None] = field(repr=False)
    skip_reason: str | None = None

    def __call__(self) -> None:
        self.run()


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


def _bind(function: Callable[[Any], None], subject: Any) -> Callable[[], None]:
    return lambda: function(subject)


__all__ = ["Case", "Check", "Conformance", "SampleSource"]
