"""The conformance checks, one function per check, grouped by kind in :data:`CHECKS`.

Each check builds the component afresh through its registered factory (with the params
the :class:`~mmplug.testing.Conformance` gives on top of the defaults), exercises one
promise of the interface, and raises ``AssertionError`` naming the component and what was
expected against what was found.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from mmplug.errors import DataError
from mmplug.model.build import build_component
from mmplug.model.interfaces import Encoder, EncoderOutput, Fusion, Head, Modality
from mmplug.model.resolve import ResolvedComponent, modality_of
from mmplug.plugins.registry import ComponentSpec

if TYPE_CHECKING:
    from mmplug.testing import Conformance

T = TypeVar("T")
CheckFn = Callable[["Conformance", ComponentSpec], None]

#: Input sizes the fusion checks use for 1, 2 and 3 modalities (distinct on purpose).
FUSION_DIMS = {"a": 3, "b": 5, "c": 7}
#: Tokens per sample in the fusion checks' fake encoder outputs.
FUSION_TOKENS = 4
BATCH = 5
HEAD_INPUT_DIM = 6
#: Equality up to float32 rounding. Batch size changes the order of sums (other kernels), so
#: the absolute tolerance follows the output's scale: a deep network at random init produces
#: values in the hundreds. A real dependence on neighbours differs by far more.
RTOL, ATOL, SCALE_TOL = 1e-4, 1e-5, 1e-4


# -- building -------------------------------------------------------------------------------


def who(spec: ComponentSpec) -> str:
    """``encoder 'bert' (mmplug-text 0.1.0)``: how failures name a component."""
    return f"{spec.kind} {spec.name!r} ({spec.distribution} {spec.version})"


def validated_params(kit: Conformance, spec: ComponentSpec, **overrides: Any) -> BaseModel:
    """The component's params model filled from the kit's params and ``overrides``."""
    values = {**kit.params_for(spec), **overrides}
    model = spec.params
    try:
        return model.model_validate(values)
    except Exception as exc:
        raise AssertionError(
            f"{who(spec)}: its params don't validate with {values!r}; give the required ones "
            f"with Conformance(params={{{spec.name!r}: {{...}}}}): {exc}"
        ) from exc


def build(kit: Conformance, spec: ComponentSpec, interface: type[T], **wiring: Any) -> T:
    """Build ``spec`` through its factory, as assembly does."""
    overrides = wiring.pop("params", {})
    component = ResolvedComponent(
        f"conformance.{spec.name}", spec, validated_params(kit, spec, **overrides)
    )
    return build_component(component, interface, **wiring)


def modality_for(kit: Conformance, spec: ComponentSpec) -> Modality:
    """The modality an encoder consumes, built with its defaults."""
    modality_spec = modality_of(kit.host_registry, spec)
    return build(kit, modality_spec, Modality)


def raw_samples(kit: Conformance, spec: ComponentSpec) -> list[Any]:
    """The kit's samples for an encoder, loaded through its modality."""
    modality = modality_for(kit, spec)
    values = kit.samples_for(spec.modality or "")
    return [modality.load(value) for value in values]


def ready_encoder(
    kit: Conformance, spec: ComponentSpec, **params: Any
) -> tuple[Encoder, list[Any]]:
    """An encoder built and fitted on the samples, and those samples (raw)."""
    encoder = build(kit, spec, Encoder, params=params)
    raws = raw_samples(kit, spec)
    encoder.fit(raws)
    return encoder, raws


def encode(
    spec: ComponentSpec, encoder: Encoder, raws: list[Any], *, train: bool = False
) -> EncoderOutput:
    return forward(spec, encoder, encoder.preprocess(raws, train=train))


def forward(spec: ComponentSpec, encoder: Encoder, inputs: dict[str, Tensor]) -> EncoderOutput:
    """``encoder(inputs)``; a bad output (EncoderOutput's own shape checks) names the encoder."""
    try:
        out = encoder(inputs)
    except ValueError as exc:  # EncoderOutput refusing tokens/mask that don't fit pooled
        raise AssertionError(f"{who(spec)}: forward raised ValueError: {exc}") from exc
    assert isinstance(out, EncoderOutput), (
        f"{who(spec)}: forward returned {type(out).__name__}, expected an EncoderOutput"
    )
    return out


def close(spec: ComponentSpec, what: str, got: Tensor, expected: Tensor) -> None:
    """``torch.testing.assert_close`` with a message naming the component and the check."""
    scale = float(expected.detach().abs().nan_to_num().max()) if expected.numel() else 0.0
    try:
        # NaN in the same places is the finite checks' business, not this check's
        torch.testing.assert_close(
            got, expected, rtol=RTOL, atol=ATOL + SCALE_TOL * scale, equal_nan=True
        )
    except AssertionError as exc:
        raise AssertionError(f"{who(spec)}: {what}\n{exc}") from None


def finite(spec: ComponentSpec, what: str, tensor: Tensor) -> None:
    bad = int((~torch.isfinite(tensor)).sum())
    assert bad == 0, f"{who(spec)}: {what} has {bad} NaN/inf values of {tensor.numel()}"


def backward(spec: ComponentSpec, module: nn.Module, loss: Tensor, what: str) -> None:
    """``loss.backward()`` and check that every trainable parameter got a gradient.

    A component without trainable parameters has nothing to check.
    """
    if not any(p.requires_grad for p in module.parameters()):
        return
    assert loss.requires_grad, (
        f"{who(spec)}: {what} is not differentiable (no grad_fn); expected gradients to reach "
        "its trainable parameters (a detach() or torch.no_grad() on the way?)"
    )
    loss.backward()  # type: ignore[no-untyped-call]
    no_grad_names(spec, module)


def no_grad_names(spec: ComponentSpec, module: nn.Module) -> None:
    """Every trainable parameter got a gradient."""
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, (
        f"{who(spec)}: no gradient reached {len(missing)} trainable parameter(s): "
        f"{', '.join(missing[:8])}; expected every trainable parameter to take part "
        "(an unused one wastes memory and breaks DistributedDataParallel)"
    )


# -- every kind ------------------------------------------------------------------------------


def check_params_round_trip_json(kit: Conformance, spec: ComponentSpec) -> None:
    """The params survive JSON: a run's saved config rebuilds the same component."""
    params = validated_params(kit, spec)
    text = params.model_dump_json()
    try:
        again = spec.params.model_validate_json(text)
    except ValueError as exc:  # pydantic's ValidationError
        raise AssertionError(
            f"{who(spec)}: params {params!r} don't validate again after JSON ({text}): {exc}"
        ) from exc
    assert again == params, f"{who(spec)}: params {params!r} came back from JSON as {again!r}"


# -- modalities ------------------------------------------------------------------------------


def check_modality_loads_samples(kit: Conformance, spec: ComponentSpec) -> None:
    """Every sample loads, and the raw objects pickle (they travel to data-loader workers)."""
    if spec.name not in kit.samples:  # samples_for() looks up the bare name too
        import pytest

        pytest.skip(f"no samples given for modality {spec.name!r}")
    modality = build(kit, spec, Modality)
    for index, value in enumerate(kit.samples_for(spec.name)):
        try:
            raw = modality.load(value)
        except Exception as exc:
            raise AssertionError(f"{who(spec)}: sample {index} did not load: {exc}") from exc
        try:
            pickle.dumps(raw)
        except Exception as exc:
            raise AssertionError(
                f"{who(spec)}: the raw object of sample {index} ({type(raw).__name__}) can't be "
                f"pickled, so it can't reach data-loader workers: {exc}"
            ) from exc


def check_modality_rejects_bad_values(kit: Conformance, spec: ComponentSpec) -> None:
    """Bad values are refused with the project's own error (``DataError``), never a bare one."""
    modality = build(kit, spec, Modality)
    bad = [object(), *kit.bad_values.get(spec.name, ())]
    for value in bad:
        try:
            modality.load(value)
        except DataError as exc:
            assert str(exc), f"{who(spec)}: rejected {value!r} with an empty message"
            continue
        except Exception as exc:
            raise AssertionError(
                f"{who(spec)}: load({value!r}) raised {type(exc).__name__}: {exc}; expected "
                "mmplug.DataError naming the value"
            ) from exc
        raise AssertionError(f"{who(spec)}: load({value!r}) succeeded; expected a DataError")


# -- encoders --------------------------------------------------------------------------------


def check_encoder_output_shapes(kit: Conformance, spec: ComponentSpec) -> None:
    """``pooled`` is ``[n, output_dim]``, tokens and mask agree, every input has ``n`` rows."""
    encoder, raws = ready_encoder(kit, spec)
    encoder.eval()
    inputs = encoder.preprocess(raws)
    count = len(raws)
    for name, tensor in inputs.items():
        assert isinstance(tensor, Tensor) and tensor.shape[:1] == (count,), (
            f"{who(spec)}: preprocess gave {name!r} of shape "
            f"{getattr(tensor, 'shape', type(tensor).__name__)}, expected a leading {count}"
        )
    with torch.no_grad():
        out = forward(spec, encoder, inputs)
    expected = (count, encoder.output_dim)
    assert tuple(out.pooled.shape) == expected, (
        f"{who(spec)}: pooled has shape {tuple(out.pooled.shape)}, expected {expected} "
        "(samples, output_dim)"
    )
    # EncoderOutput itself checked tokens [n, T, output_dim] and a bool mask [n, T].


def check_encoder_finite(kit: Conformance, spec: ComponentSpec) -> None:
    """No NaN or inf in ``pooled`` or the real tokens."""
    encoder, raws = ready_encoder(kit, spec)
    with torch.no_grad():
        out = encode(spec, encoder.eval(), raws)
    finite(spec, "pooled", out.pooled)
    if out.tokens is not None and out.mask is not None:
        finite(spec, "tokens", out.tokens[out.mask])


def check_encoder_batch_independent(kit: Conformance, spec: ComponentSpec) -> None:
    """In eval mode a sample's output depends neither on its neighbours nor the batch size."""
    encoder, raws = ready_encoder(kit, spec)
    encoder.eval()
    with torch.no_grad():
        batched = encode(spec, encoder, raws).pooled
        backwards = encode(spec, encoder, raws[::-1]).pooled.flip(0)
        for index, raw in enumerate(raws):
            alone = encode(spec, encoder, [raw]).pooled[0]
            close(spec, f"sample {index} alone differs from it in a batch", alone, batched[index])
    close(spec, "pooled depends on the order of the batch", backwards, batched)


def check_encoder_deterministic(kit: Conformance, spec: ComponentSpec) -> None:
    """Eval mode gives the same output twice."""
    encoder, raws = ready_encoder(kit, spec)
    encoder.eval()
    with torch.no_grad():
        first = encode(spec, encoder, raws).pooled
        second = encode(spec, encoder, raws).pooled
    close(spec, "two eval passes on the same input differ", second, first)


def check_encoder_gradients(kit: Conformance, spec: ComponentSpec) -> None:
    """Training reaches every trainable parameter."""
    encoder, raws = ready_encoder(kit, spec)
    encoder.train()
    out = encode(spec, encoder, raws, train=True)
    loss = out.pooled.square().mean()
    if out.tokens is not None and out.mask is not None:
        loss = loss + out.tokens[out.mask].square().mean()
    assert any(p.requires_grad for p in encoder.parameters()) or not list(encoder.parameters()), (
        f"{who(spec)}: built with default params, none of its parameters is trainable"
    )
    backward(spec, encoder, loss, "its output")


def check_encoder_freeze(kit: Conformance, spec: ComponentSpec) -> None:
    """``freeze: true`` leaves nothing trainable and no buffer (BatchNorm statistics) moving."""
    if "freeze" not in spec.params.model_fields:
        import pytest

        pytest.skip(f"{who(spec)} has no 'freeze' param")
    encoder, raws = ready_encoder(kit, spec, freeze=True)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert not trainable, (
        f"{who(spec)}: with freeze: true, {len(trainable)} parameter(s) still require grad: "
        f"{', '.join(trainable[:8])}"
    )
    buffers = {n: b.clone() for n, b in encoder.named_buffers()}
    encoder.train()
    with torch.no_grad():
        encode(spec, encoder, raws)
    moved = [
        n for n, b in encoder.named_buffers() if n in buffers and not torch.equal(b, buffers[n])
    ]
    assert not moved, (
        f"{who(spec)}: with freeze: true, a training-mode pass changed buffers {', '.join(moved)}"
    )


# -- fusions ---------------------------------------------------------------------------------


def fake_features(
    dims: dict[str, int], present: dict[str, Tensor], *, seed: int, dtype: torch.dtype
) -> dict[str, EncoderOutput]:
    """Encoder outputs as assembly hands them over: absent rows zero, their tokens masked."""
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for key, dim in dims.items():
        rows = present[key]
        pooled = torch.randn(BATCH, dim, generator=generator).to(dtype)
        tokens = torch.randn(BATCH, FUSION_TOKENS, dim, generator=generator).to(dtype)
        lengths = torch.randint(1, FUSION_TOKENS + 1, (BATCH,), generator=generator)
        mask = (torch.arange(FUSION_TOKENS) < lengths[:, None]) & rows[:, None]
        pooled = torch.where(rows[:, None], pooled, torch.zeros_like(pooled))
        tokens = torch.where(mask[..., None], tokens, torch.zeros_like(tokens))
        features[key] = EncoderOutput(pooled, tokens, mask)
    return features


def everyone(dims: dict[str, int]) -> dict[str, Tensor]:
    return {key: torch.ones(BATCH, dtype=torch.bool) for key in dims}


def some_absent(dims: dict[str, int]) -> dict[str, Tensor]:
    """Each key absent for some rows; row 0 has every key, the last row none."""
    present = {}
    for offset, key in enumerate(dims):
        rows = torch.tensor([(i + offset) % 2 == 0 for i in range(BATCH)])
        rows[0], rows[-1] = True, False
        present[key] = rows
    return present


def fusion_for(kit: Conformance, spec: ComponentSpec, count: int) -> tuple[Fusion, dict[str, int]]:
    dims = dict(list(FUSION_DIMS.items())[:count])
    return build(kit, spec, Fusion, input_dims=dims), dims


def fuse(
    spec: ComponentSpec,
    fusion: Fusion,
    features: dict[str, EncoderOutput],
    present: dict[str, Tensor],
) -> Tensor:
    out = fusion(features, present)
    assert isinstance(out, Tensor), (
        f"{who(spec)}: forward returned {type(out).__name__}, expected a Tensor"
    )
    return out


def check_fusion_output_shape(kit: Conformance, spec: ComponentSpec) -> None:
    """``[B, output_dim]`` for 1, 2 and 3 modalities of different sizes."""
    for count in (1, 2, 3):
        fusion, dims = fusion_for(kit, spec, count)
        present = some_absent(dims)
        out = fuse(
            spec, fusion.eval(), fake_features(dims, present, seed=0, dtype=torch.float32), present
        )
        expected = (BATCH, fusion.output_dim)
        assert tuple(out.shape) == expected, (
            f"{who(spec)}: with {count} modalities {dims}, output has shape "
            f"{tuple(out.shape)}, expected {expected}"
        )


def check_fusion_key_order(kit: Conformance, spec: ComponentSpec) -> None:
    """The order of the input dicts' keys changes nothing."""
    fusion, dims = fusion_for(kit, spec, 3)
    fusion.eval()
    present = some_absent(dims)
    features = fake_features(dims, present, seed=1, dtype=torch.float32)
    with torch.no_grad():
        forward = fuse(spec, fusion, features, present)
        shuffled = fuse(
            spec,
            fusion,
            {k: features[k] for k in reversed(list(features))},
            {k: present[k] for k in reversed(list(present))},
        )
    close(spec, "the output depends on the order of the input dict's keys", shuffled, forward)


def check_fusion_absent_has_no_influence(kit: Conformance, spec: ComponentSpec) -> None:
    """What an absent modality's rows hold (even NaN) changes nothing for that sample."""
    fusion, dims = fusion_for(kit, spec, 3)
    fusion.eval()
    present = some_absent(dims)
    features = fake_features(dims, present, seed=2, dtype=torch.float32)
    garbage = {}
    for key, out in features.items():
        absent = ~present[key]
        pooled = out.pooled.clone()
        pooled[absent] = torch.randn(int(absent.sum()), dims[key]) * 100
        pooled[absent, 0] = float("nan")
        assert out.tokens is not None and out.mask is not None
        tokens = out.tokens.clone()
        tokens[absent] = torch.randn_like(tokens[absent]) * 100
        garbage[key] = EncoderOutput(pooled, tokens, out.mask)
    with torch.no_grad():
        clean = fuse(spec, fusion, features, present)
        dirty = fuse(spec, fusion, garbage, present)
    close(spec, "changing an absent modality's features changed the output", dirty, clean)


def check_fusion_all_absent_finite(kit: Conformance, spec: ComponentSpec) -> None:
    """A sample with every modality absent gets a finite output, in eval and train mode."""
    fusion, dims = fusion_for(kit, spec, 2)
    present = {key: torch.zeros(BATCH, dtype=torch.bool) for key in dims}
    features = {key: EncoderOutput(torch.zeros(BATCH, dim)) for key, dim in dims.items()}
    for mode in (False, True):
        finite(
            spec,
            "the output for all-absent rows",
            fuse(spec, fusion.train(mode), features, present),
        )
    present = some_absent(dims)
    out = fuse(
        spec, fusion.eval(), fake_features(dims, present, seed=3, dtype=torch.float32), present
    )
    finite(spec, "the output for a batch whose last row has nothing present", out)


def check_fusion_gradients(kit: Conformance, spec: ComponentSpec) -> None:
    """With every modality present, training reaches every parameter."""
    fusion, dims = fusion_for(kit, spec, 3)
    fusion.train()
    present = everyone(dims)
    out = fuse(spec, fusion, fake_features(dims, present, seed=4, dtype=torch.float32), present)
    backward(spec, fusion, out.square().mean(), "its output")


def check_fusion_float64(kit: Conformance, spec: ComponentSpec) -> None:
    """After ``.to(torch.float64)`` the fusion takes and returns float64 (parameters moved)."""
    fusion, dims = fusion_for(kit, spec, 2)
    fusion = fusion.to(torch.float64).eval()
    present = some_absent(dims)
    out = fuse(spec, fusion, fake_features(dims, present, seed=5, dtype=torch.float64), present)
    assert out.dtype == torch.float64, f"{who(spec)}: float64 inputs gave a {out.dtype} output"
    finite(spec, "the float64 output", out)


# -- heads -----------------------------------------------------------------------------------

#: Targets for the core tasks, made from the head's outputs ``[B, C]``, as a data pipeline
#: gives them: class indices ``[B]``; 0/1 integers ``[B, C]``; values ``[B]`` for one target,
#: ``[B, C]`` for several.
DEFAULT_TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "classification": lambda out: torch.arange(out.shape[0]) % out.shape[1],
    "multilabel": lambda out: (
        (torch.arange(out.shape[0])[:, None] + torch.arange(out.shape[1])) % 2
    ),
    "regression": lambda out: torch.linspace(-1.0, 1.0, out.numel()).view_as(out).squeeze(-1),
}


def head_and_outputs(kit: Conformance, spec: ComponentSpec) -> tuple[Head, Tensor, Tensor]:
    head = build(kit, spec, Head, input_dim=HEAD_INPUT_DIM)
    fused = torch.randn(BATCH, HEAD_INPUT_DIM, generator=torch.Generator().manual_seed(6))
    outputs = head(fused)
    make = kit.targets.get(head.task) or DEFAULT_TARGETS.get(head.task)
    assert make is not None, (
        f"{who(spec)}: no targets for task {head.task!r}; give Conformance(targets="
        f"{{{head.task!r}: lambda outputs: ...}})"
    )
    return head, outputs, make(outputs.detach())


def check_head_output_shape(kit: Conformance, spec: ComponentSpec) -> None:
    """``forward`` maps ``[B, input_dim]`` to ``[B, output_dim]``."""
    head, outputs, _ = head_and_outputs(kit, spec)
    expected = (BATCH, head.output_dim)
    assert tuple(outputs.shape) == expected, (
        f"{who(spec)}: outputs have shape {tuple(outputs.shape)}, expected {expected}"
    )


def check_head_loss(kit: Conformance, spec: ComponentSpec) -> None:
    """The loss is a finite scalar whose gradients reach every parameter."""
    head, outputs, targets = head_and_outputs(kit, spec)
    loss = head.loss(outputs, targets)
    assert isinstance(loss, Tensor) and loss.dim() == 0, (
        f"{who(spec)}: loss returned {getattr(loss, 'shape', type(loss).__name__)}, expected a "
        "scalar tensor"
    )
    finite(spec, "the loss", loss)
    backward(spec, head, loss, "the loss")


def check_head_predict_and_metrics(kit: Conformance, spec: ComponentSpec) -> None:
    """``predict`` keeps one row per sample; every metric updates and computes finite values."""
    from torchmetrics import Metric

    head, outputs, targets = head_and_outputs(kit, spec)
    with torch.no_grad():
        predicted = head.predict(outputs)
    assert predicted.shape[0] == BATCH, (
        f"{who(spec)}: predict gave shape {tuple(predicted.shape)}, expected {BATCH} rows"
    )
    metrics = head.metrics()
    assert isinstance(metrics, dict), f"{who(spec)}: metrics() returned {type(metrics).__name__}"
    for name, metric in metrics.items():
        assert isinstance(metric, Metric), (
            f"{who(spec)}: metric {name!r} is a {type(metric).__name__}, not a torchmetrics Metric"
        )
        metric.update(predicted, targets)
        value = metric.compute()
        finite(spec, f"metric {name!r}", torch.as_tensor(value, dtype=torch.float32))


CHECKS: dict[str, dict[str, CheckFn]] = {
    "modality": {
        "loads_samples": check_modality_loads_samples,
        "rejects_bad_values": check_modality_rejects_bad_values,
        "params_json": check_params_round_trip_json,
    },
    "encoder": {
        "output_shapes": check_encoder_output_shapes,
        "finite": check_encoder_finite,
        "batch_independent": check_encoder_batch_independent,
        "deterministic": check_encoder_deterministic,
        "gradients": check_encoder_gradients,
        "freeze": check_encoder_freeze,
        "params_json": check_params_round_trip_json,
    },
    "fusion": {
        "output_shape": check_fusion_output_shape,
        "key_order": check_fusion_key_order,
        "absent_has_no_influence": check_fusion_absent_has_no_influence,
        "all_absent_finite": check_fusion_all_absent_finite,
        "gradients": check_fusion_gradients,
        "float64": check_fusion_float64,
        "params_json": check_params_round_trip_json,
    },
    "head": {
        "output_shape": check_head_output_shape,
        "loss": check_head_loss,
        "predict_and_metrics": check_head_predict_and_metrics,
        "params_json": check_params_round_trip_json,
    },
}
