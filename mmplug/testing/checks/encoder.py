"""Checks of an encoder: shapes, finite values, batch independence, determinism, gradients,
freezing, and its preprocessor for data-loader workers."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmplug.model.interfaces import Encoder, EncoderOutput, Modality
from mmplug.model.resolve import modality_of
from mmplug.testing.checks.common import backward, build, close, finite

if TYPE_CHECKING:
    from mmplug.testing import Case


def modality_for(case: Case) -> Modality:
    """The modality an encoder consumes, built with its defaults."""
    from mmplug.testing import Case

    modality_spec = modality_of(case.kit.host_registry, case.spec)
    return build(Case(case.kit, modality_spec), Modality)


def raw_samples(case: Case) -> list[Any]:
    """The kit's samples for an encoder, loaded through its modality."""
    modality = modality_for(case)
    values = case.kit.samples_for(case.spec.modality or "")
    return [modality.load(value) for value in values]


def ready_encoder(case: Case, **params: Any) -> tuple[Encoder, list[Any]]:
    """An encoder built and fitted on the samples, and those samples (raw)."""
    encoder = build(case, Encoder, params=params)
    raws = raw_samples(case)
    encoder.fit(raws)
    return encoder, raws


def encode(case: Case, encoder: Encoder, raws: list[Any], *, train: bool = False) -> EncoderOutput:
    return forward(case, encoder, encoder.preprocess(raws, train=train))


def forward(case: Case, encoder: Encoder, inputs: dict[str, Tensor]) -> EncoderOutput:
    """``encoder(inputs)``; a bad output (EncoderOutput's own shape checks) names the encoder."""
    try:
        out = encoder(inputs)
    except ValueError as exc:  # EncoderOutput refusing tokens/mask that don't fit pooled
        raise AssertionError(f"{case.who()}: forward raised ValueError: {exc}") from exc
    assert isinstance(out, EncoderOutput), (
        f"{case.who()}: forward returned {type(out).__name__}, expected an EncoderOutput"
    )
    return out


# -- encoders --------------------------------------------------------------------------------


def check_encoder_output_shapes(case: Case) -> None:
    """``pooled`` is ``[n, output_dim]``, tokens and mask agree, every input has ``n`` rows."""
    encoder, raws = ready_encoder(case)
    encoder.eval()
    inputs = encoder.preprocess(raws)
    count = len(raws)
    for name, tensor in inputs.items():
        assert isinstance(tensor, Tensor) and tensor.shape[:1] == (count,), (
            f"{case.who()}: preprocess gave {name!r} of shape "
            f"{getattr(tensor, 'shape', type(tensor).__name__)}, expected a leading {count}"
        )
    with torch.no_grad():
        out = forward(case, encoder, inputs)
    expected = (count, encoder.output_dim)
    assert tuple(out.pooled.shape) == expected, (
        f"{case.who()}: pooled has shape {tuple(out.pooled.shape)}, expected {expected} "
        "(samples, output_dim)"
    )
    # EncoderOutput itself checked tokens [n, T, output_dim] and a bool mask [n, T].


def check_encoder_finite(case: Case) -> None:
    """No NaN or inf in ``pooled`` or the real tokens."""
    encoder, raws = ready_encoder(case)
    with torch.no_grad():
        out = encode(case, encoder.eval(), raws)
    finite(case, "pooled", out.pooled)
    if out.tokens is not None and out.mask is not None:
        finite(case, "tokens", out.tokens[out.mask])


def check_encoder_batch_independent(case: Case) -> None:
    """In eval mode a sample's output depends neither on its neighbours nor the batch size."""
    encoder, raws = ready_encoder(case)
    encoder.eval()
    with torch.no_grad():
        batched = encode(case, encoder, raws).pooled
        backwards = encode(case, encoder, raws[::-1]).pooled.flip(0)
        for index, raw in enumerate(raws):
            alone = encode(case, encoder, [raw]).pooled[0]
            close(case, f"sample {index} alone differs from it in a batch", alone, batched[index])
    close(case, "pooled depends on the order of the batch", backwards, batched)


def check_encoder_deterministic(case: Case) -> None:
    """Eval mode gives the same output twice."""
    encoder, raws = ready_encoder(case)
    encoder.eval()
    with torch.no_grad():
        first = encode(case, encoder, raws).pooled
        second = encode(case, encoder, raws).pooled
    close(case, "two eval passes on the same input differ", second, first)


def check_encoder_gradients(case: Case) -> None:
    """Training reaches every trainable parameter."""
    encoder, raws = ready_encoder(case)
    encoder.train()
    out = encode(case, encoder, raws, train=True)
    loss = out.pooled.square().mean()
    if out.tokens is not None and out.mask is not None:
        loss = loss + out.tokens[out.mask].square().mean()
    assert any(p.requires_grad for p in encoder.parameters()) or not list(encoder.parameters()), (
        f"{case.who()}: built with these params, none of its parameters is trainable"
    )
    backward(case, encoder, loss, "its output")


def check_encoder_freeze(case: Case) -> None:
    """``freeze: true`` leaves nothing trainable and no buffer (BatchNorm statistics) moving."""
    import pytest

    if "freeze" not in case.spec.params.model_fields:
        pytest.skip(f"{case.who()} has no 'freeze' param")
    if case.variant:
        try:
            case.spec.params.model_validate({**case.params, "freeze": True})
        except ValueError:  # pydantic's ValidationError: the variant says how much to train
            pytest.skip(f"{case.who()}: freeze: true does not go with this variant's params")
    encoder, raws = ready_encoder(case, freeze=True)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert not trainable, (
        f"{case.who()}: with freeze: true, {len(trainable)} parameter(s) still require grad: "
        f"{', '.join(trainable[:8])}"
    )
    buffers = {n: b.clone() for n, b in encoder.named_buffers()}
    encoder.train()
    with torch.no_grad():
        encode(case, encoder, raws)
    moved = [
        n for n, b in encoder.named_buffers() if n in buffers and not torch.equal(b, buffers[n])
    ]
    assert not moved, (
        f"{case.who()}: with freeze: true, a training-mode pass changed buffers {', '.join(moved)}"
    )


def check_encoder_deterministic_preprocess(case: Case) -> None:
    """An encoder that sets ``deterministic_preprocess`` (which lets the feature cache keep
    its outputs when it is frozen) preprocesses the same in training as in eval, every time."""
    import pytest

    encoder, raws = ready_encoder(case)
    if not getattr(encoder, "deterministic_preprocess", False):
        pytest.skip(f"{case.who()}: deterministic_preprocess is not set (never cached)")
    expected = encoder.preprocess(raws, train=False)
    for seed in (0, 1):
        torch.manual_seed(seed)
        same_tensors(
            case,
            "deterministic_preprocess is set, but preprocess(train=True)",
            encoder.preprocess(raws, train=True),
            "train=False (augmentation? then set it False when augmenting)",
            expected,
        )


def check_encoder_preprocessor(case: Case) -> None:
    """``preprocessor()`` gives what ``preprocess`` gives, pickles (data-loader workers get
    it), and one made before ``fit`` follows what fit learns (a pipeline is made before)."""
    encoder = build(case, Encoder)
    early = encoder.preprocessor()
    raws = raw_samples(case)
    encoder.fit(raws)
    expected = encoder.preprocess(raws)
    for what, preprocessor in (
        ("made before fit", early),
        ("made after fit", encoder.preprocessor()),
    ):
        same_tensors(case, f"preprocessor() {what}", preprocessor(raws), "preprocess", expected)
    try:
        again = pickle.loads(pickle.dumps(encoder.preprocessor()))
    except Exception as exc:
        raise AssertionError(
            f"{case.who()}: its preprocessor() can't be pickled, so data-loader workers can't "
            f"get it: {type(exc).__name__}: {exc}"
        ) from exc
    same_tensors(case, "a pickled copy of preprocessor()", again(raws), "preprocess", expected)


def same_tensors(
    case: Case, what: str, got: dict[str, Tensor], other: str, expected: dict[str, Tensor]
) -> None:
    """``got`` has the names of ``expected``, each tensor close to its namesake; the report
    reads "WHAT gives [names], OTHER gives [names]" or "WHAT differs from OTHER in 'name'"."""
    assert sorted(got) == sorted(expected), (
        f"{case.who()}: {what} gives {sorted(got)}, {other} gives {sorted(expected)}"
    )
    for name in expected:
        close(case, f"{what} differs from {other} in {name!r}", got[name], expected[name])
