"""What every check needs: building a case's component, comparing tensors, gradients, and
the checks that apply to every kind (params through JSON, constructor defaults)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from mmplug.model.build import build_component
from mmplug.model.resolve import ResolvedComponent

if TYPE_CHECKING:
    from mmplug.testing import Case

T = TypeVar("T")

#: Equality up to float32 rounding. Batch size changes the order of sums (other kernels), so
#: the absolute tolerance follows the output's scale: a deep network at random init produces
#: values in the hundreds. A real dependence on neighbours differs by far more.
RTOL, ATOL, SCALE_TOL = 1e-4, 1e-5, 1e-4


def validated_params(case: Case, **overrides: Any) -> BaseModel:
    """The component's params model filled from the case's params and ``overrides``."""
    values = {**case.params, **overrides}
    try:
        return case.spec.params.model_validate(values)
    except Exception as exc:
        raise AssertionError(
            f"{case.who()}: its params don't validate with {values!r}; give the required ones "
            f"with Conformance(params={{{case.spec.name!r}: {{...}}}}): {exc}"
        ) from exc


def build(
    case: Case, interface: type[T], *, params: dict[str, Any] | None = None, **wiring: Any
) -> T:
    """Build the case's component through its factory, as assembly does."""
    spec = case.spec
    component = ResolvedComponent(
        f"conformance.{spec.name}", spec, validated_params(case, **(params or {}))
    )
    return build_component(component, interface, **wiring)


def close(case: Case, what: str, got: Tensor, expected: Tensor, *, atol: float = ATOL) -> None:
    """``got`` equals ``expected`` up to float32 rounding, wherever ``expected`` is finite;
    integer and bool tensors must be equal. A failure names the component and the check.

    Entries where ``expected`` is NaN or inf are not compared: finiteness is what the finite
    checks assert (``finite``, ``all_absent_finite``), and one bug fails one check.
    """
    if not (got.is_floating_point() and expected.is_floating_point()):
        assert got.dtype == expected.dtype and torch.equal(got, expected), (
            f"{case.who()}: {what}: {got} against {expected}"
        )
        return
    detail = difference(got, expected, atol=atol)
    if detail is not None:
        raise AssertionError(f"{case.who()}: {what}: {detail}")


def difference(got: Tensor, expected: Tensor, *, atol: float = ATOL) -> str | None:
    """None when ``got`` is close to ``expected`` wherever ``expected`` is finite, else how it
    differs: how many entries, the largest difference among finite ones and where it is, and
    how many are NaN/inf where ``expected`` is finite (never a "difference: nan")."""
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)} against {tuple(expected.shape)}"
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    reference = torch.isfinite(expected)
    both = reference & torch.isfinite(got)
    scale = float(expected[reference].abs().max()) if bool(reference.any()) else 0.0
    tolerance = atol + SCALE_TOL * scale + RTOL * expected.abs()
    gap = torch.where(both, (got - expected).abs(), 0.0)
    far = both & (gap > tolerance)
    lost = reference & ~torch.isfinite(got)  # NaN/inf here, a number there
    if not (far.any() or lost.any()):
        return None
    parts = []
    if far.any():
        worst = _index(torch.where(far, gap, -1.0).argmax(), gap.shape)
        parts.append(
            f"{int(far.sum())} of {int(both.sum())} entries finite in both differ, by up to "
            f"{float(gap[worst]):.4g} at {worst} ({float(got[worst]):.6g} against "
            f"{float(expected[worst]):.6g}; tolerance {float(tolerance[worst]):.2g})"
        )
    if lost.any():
        first = _index(lost.flatten().nonzero()[0, 0], lost.shape)
        parts.append(
            f"{int(lost.sum())} entries are NaN/inf where the expected value is finite "
            f"(first at {first}: {float(got[first])} against {float(expected[first]):.6g})"
        )
    if far.dim() > 1:
        parts.append(_rows(far | lost))
    return "; ".join(parts)


def _index(flat: Tensor, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(flat, shape))


def _rows(wrong: Tensor) -> str:
    """``rows [1, 3] of 5``: the rows (first dimension) with a wrong entry."""
    return f"rows {wrong.flatten(1).any(1).nonzero().flatten().tolist()} of {len(wrong)}"


def finite(case: Case, what: str, tensor: Tensor) -> None:
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return
    rows = f" ({_rows(bad)})" if tensor.dim() > 1 else ""
    raise AssertionError(
        f"{case.who()}: {what} has {int(bad.sum())} NaN/inf values of {tensor.numel()}{rows}"
    )


def backward(case: Case, module: nn.Module, loss: Tensor, what: str) -> None:
    """``loss.backward()`` and check that every trainable parameter got a finite gradient.

    A component without trainable parameters has nothing to check. A NaN/inf ``loss`` skips
    the check: the gradients of a non-finite output say nothing more, and that output is
    what the finite checks report (a head's ``loss`` check asserts a finite loss first).
    """
    if not any(p.requires_grad for p in module.parameters()):
        return
    if not bool(torch.isfinite(loss.detach()).all()):
        import pytest

        pytest.skip(
            f"{case.who()}: {what} is not finite (the finite checks report it), so its "
            "gradients are not checked"
        )
    assert loss.requires_grad, (
        f"{case.who()}: {what} is not differentiable (no grad_fn); expected gradients to reach "
        "its trainable parameters (a detach() or torch.no_grad() on the way?)"
    )
    loss.backward()  # type: ignore[no-untyped-call]
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, (
        f"{case.who()}: no gradient reached {len(missing)} trainable parameter(s): "
        f"{', '.join(missing[:8])}; expected every trainable parameter to take part "
        "(an unused one wastes memory and breaks DistributedDataParallel)"
    )
    bad = [
        n
        for n, p in module.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    assert not bad, f"{case.who()}: NaN/inf gradients in {', '.join(bad[:8])}"


# -- every kind ------------------------------------------------------------------------------


def check_params_round_trip_json(case: Case) -> None:
    """The params survive JSON: a run's saved config rebuilds the same component."""
    params = validated_params(case)
    text = params.model_dump_json()
    try:
        again = case.spec.params.model_validate_json(text)
    except ValueError as exc:  # pydantic's ValidationError
        raise AssertionError(
            f"{case.who()}: params {params!r} don't validate again after JSON ({text}): {exc}"
        ) from exc
    assert again == params, f"{case.who()}: params {params!r} came back from JSON as {again!r}"


def check_constructor_defaults(case: Case) -> None:
    """Where the factory has a default for a param, it is the params model's default.

    A Python caller building the component directly then gets what a config gets; factories
    that take ``**params`` have nothing to compare.
    """
    factory = case.spec.load_factory()
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return
    differ = []
    for name, info in case.spec.params.model_fields.items():
        parameter = signature.parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty or info.is_required():
            continue
        expected = info.get_default(call_default_factory=True)
        default = parameter.default
        # None standing for an empty list (a mutable default avoided) is the same default
        if default == expected or (default is None and expected in ([], {}, ())):
            continue
        if isinstance(default, tuple | list) and list(default) == expected:
            continue
        differ.append(f"{name}: {default!r} in the factory, {expected!r} in the params model")
    assert not differ, (
        f"{case.who()}: the factory's defaults differ from its params model's: " + "; ".join(differ)
    )
