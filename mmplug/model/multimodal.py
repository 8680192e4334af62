"""The running model: encoders, a fusion and a head, and what happens between them.

:class:`MultimodalModel` owns absence: encoders only ever see the samples that have their
modality; the model scatters their outputs back into batch order, with zero rows and
``present`` False for the samples that lack it. In training it can also drop modalities at
random (:func:`drop_modalities`). A :class:`Batch` comes from the data pipeline
(:mod:`mmplug.data.pipeline`); :mod:`mmplug.model.build` makes the model from a config.

Unimodal heads: a model may also have one head per modality key, each on its encoder's
pooled features alone (``model.unimodal_heads``). Their outputs come back in
:attr:`ModelOutput.unimodal`; training adds their losses to the fused one, so that no encoder
is starved by a faster one (see :mod:`mmplug.training.balance`). A fusion that combines
outputs rather than features (``Fusion.combines == "outputs"``, such as core's ``late``)
takes the unimodal heads' outputs, and its result is the model's output: there is no fused
head then, and :attr:`MultimodalModel.head` is the first key's unimodal head (its loss,
predictions and metrics are those of every unimodal head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from mmplug.errors import ComponentError
from mmplug.model.interfaces import Encoder, EncoderOutput, Fusion, Head, Modality
from mmplug.model.resolve import ResolvedComponent, ResolvedModel


class FeatureSink(Protocol):
    """Where an encoder's outputs for rows that :class:`Encoded` lacked are kept (the feature
    cache, :class:`mmplug.data.feature_cache.FeatureCache`)."""

    def write(self, key: str, entries: Sequence[str | None], out: EncoderOutput) -> None: ...


@dataclass
class Encoded:
    """A key's encoder outputs that are already known for some of its present rows (the
    feature cache's hits): the encoder runs on the other rows only.

    Attributes:
        known: bool ``[n]`` over the key's present rows (in order): whose outputs are here.
        outputs: the known rows' outputs (``known.sum()`` rows); None when none is known.
        entries: for each other present row, in order, where its output is to be kept
            (None: nowhere); the batch's ``inputs[key]`` holds those rows only.
        sink: what keeps them; None to keep nothing.
        tokens: whether ``tokens``/``mask`` are kept (the fusion uses them); when not,
            the encoder's are dropped, so that every row looks the same.
    """

    known: Tensor
    outputs: EncoderOutput | None
    entries: list[str | None]
    sink: FeatureSink | None = None
    tokens: bool = True

    @property
    def found(self) -> int:
        """How many present rows' outputs are known (the feature cache's hits)."""
        return int(self.known.sum())

    def to(self, device: torch.device | str) -> Encoded:
        out = self.outputs
        if out is not None:
            out = EncoderOutput(
                out.pooled.to(device),
                None if out.tokens is None else out.tokens.to(device),
                None if out.mask is None else out.mask.to(device),
            )
        return Encoded(self.known.to(device), out, self.entries, self.sink, self.tokens)

    def rows(self, keep: Tensor) -> Encoded:
        """Only the present rows where ``keep`` (bool ``[n]``) is True."""
        known = self.known.to(keep.device)
        out = self.outputs
        if out is not None:
            picked = keep[known]
            out = EncoderOutput(
                out.pooled[picked],
                None if out.tokens is None else out.tokens[picked],
                None if out.mask is None else out.mask[picked],
            )
        others = keep[~known].tolist()
        entries = [entry for entry, kept in zip(self.entries, others, strict=True) if kept]
        return Encoded(known[keep], out, entries, self.sink, self.tokens)


@dataclass
class Batch:
    """A preprocessed batch.

    Attributes:
        size: ``B``.
        inputs: per modality key, the encoder's tensors for the *present* samples only
            (leading dimension ``present[key].sum()``), or for those of them that
            ``encoded[key]`` doesn't know.
        present: per modality key, bool ``[B]``.
        encoded: per modality key, outputs already known for some of its present samples
            (from the feature cache); keys not here are encoded from ``inputs``.
    """

    size: int
    inputs: dict[str, dict[str, Tensor]]
    present: dict[str, Tensor]
    encoded: dict[str, Encoded] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(
            size=self.size,
            inputs={k: {n: t.to(device) for n, t in v.items()} for k, v in self.inputs.items()},
            present={k: v.to(device) for k, v in self.present.items()},
            encoded={k: v.to(device) for k, v in self.encoded.items()},
        )

    def without(self, key: str) -> Batch:
        """The same batch with modality ``key`` absent from every sample (its inputs gone)."""
        return Batch(
            size=self.size,
            inputs={k: ({} if k == key else v) for k, v in self.inputs.items()},
            present={k: (torch.zeros_like(v) if k == key else v) for k, v in self.present.items()},
            encoded={k: v for k, v in self.encoded.items() if k != key},
        )


@dataclass
class ModelOutput:
    """What :class:`MultimodalModel` returns.

    Attributes:
        logits: the head's output, ``[B, C]``.
        fused: the fusion's output, ``[B, F]``.
        features: per key, the encoder output scattered back to batch order.
        unimodal: per key, that key's unimodal head's outputs ``[B, C]`` (rows of samples
            without the key are computed from zeros and mean nothing); empty when the model
            has no unimodal heads.
        present: per key, which samples had the key as the model saw them (after modality
            dropout).
    """

    logits: Tensor
    fused: Tensor
    features: dict[str, EncoderOutput] = field(default_factory=dict)
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    present: dict[str, Tensor] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """Encoders (one per modality key, in sorted key order), a fusion and a head.

    Args:
        encoders: modality key -> encoder.
        fusion: built with the encoders' output dims.
        head: built with the fusion's output dim.
        modalities: modality key -> the :class:`Modality` that loads its raw values.
        resolved: the resolved config the model was built from, if any.
        modality_dropout: in training mode, the probability of dropping each present
            modality of a sample (see :func:`drop_modalities`).
        unimodal_heads: modality key -> a head on that encoder's pooled features, for every
            key; required when the fusion combines outputs.
        head: the fused head; None when the fusion combines outputs.
    """

    head: Head

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        fusion: Fusion,
        head: Head | None,
        modalities: Mapping[str, Modality],
        resolved: ResolvedModel | None = None,
        modality_dropout: float = 0.0,
        unimodal_heads: Mapping[str, Head] | None = None,
    ):
        super().__init__()
        self.modality_dropout = modality_dropout
        self.encoders = nn.ModuleDict({key: encoders[key] for key in sorted(encoders)})
        self.fusion = fusion
        self.late = combines_outputs(fusion)
        self.unimodal_heads: nn.ModuleDict | None = None
        if unimodal_heads is not None:
            if sorted(unimodal_heads) != list(self.encoders):
                raise ComponentError(
                    f"unimodal heads for {sorted(unimodal_heads)}, but the encoders are "
                    f"{list(self.encoders)}"
                )
            self.unimodal_heads = nn.ModuleDict({key: unimodal_heads[key] for key in self.encoders})
        if self.late:
            if self.unimodal_heads is None:
                raise ComponentError(
                    f"fusion {type(fusion).__name__} combines outputs: it needs unimodal heads"
                )
            # Not a submodule of its own: the same module as the first unimodal head, so its
            # weights are saved once. Loss, predict and metrics don't depend on which head.
            object.__setattr__(self, "head", next(iter(self.unimodal_heads.values())))
        elif head is None:
            raise ComponentError("a model whose fusion combines features needs a head")
        else:
            self.head = head
        self.modalities = {key: modalities[key] for key in sorted(modalities)}
        self.resolved = resolved
        # Follows .to(device/dtype) so that modalities absent from a whole batch get zeros
        # of the right kind.
        self._anchor: Tensor
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def keys(self) -> list[str]:
        """The modality keys, sorted."""
        return list(self.encoders)

    def encoder_items(self) -> list[tuple[str, Encoder]]:
        """``(key, encoder)`` pairs in sorted key order."""
        return [(key, cast(Encoder, encoder)) for key, encoder in self.encoders.items()]

    def fit_encoders(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Give each encoder the raw values of its key (present ones only) to fit preprocessing."""
        for key, encoder in self.encoder_items():
            raws = [s[key] for s in samples if s.get(key) is not None]
            if raws:
                encoder.fit(raws)

    def encode(self, batch: Batch) -> dict[str, EncoderOutput]:
        """Run each encoder on its present samples and scatter the outputs to ``[B, ...]``.

        Absent rows are zeros (tokens masked out). When no sample of the batch has a key, its
        encoder does not run and ``tokens``/``mask`` are None.
        """
        features = {}
        for key, encoder in self.encoder_items():
            present = batch.present[key]
            count = int(present.sum())
            if count == 0:
                pooled = self._anchor.new_zeros(batch.size, encoder.output_dim)
                features[key] = EncoderOutput(pooled)
                continue
            known = batch.encoded.get(key)
            if known is None:
                out = encoder(batch.inputs[key])
                _check_encoder_output(self.named(encoder, key), encoder, out, count)
            else:
                out = self._complete(key, encoder, batch.inputs[key], known)
            features[key] = _scatter(out, present, batch.size)
        return features

    def _complete(
        self, key: str, encoder: Encoder, inputs: dict[str, Tensor], known: Encoded
    ) -> EncoderOutput:
        """The outputs of every present row of ``key``: the known ones, and the encoder's
        for the others (which go to ``known.sink``)."""
        missing = int((~known.known).sum())
        if not missing:
            assert known.outputs is not None
            return known.outputs
        computed: EncoderOutput = encoder(inputs)
        _check_encoder_output(self.named(encoder, key), encoder, computed, missing)
        if not known.tokens:
            computed = EncoderOutput(computed.pooled)
        if known.sink is not None:
            known.sink.write(key, known.entries, computed)
        if known.outputs is None:
            return computed
        return _merge(known.known, known.outputs, computed)

    def forward(self, batch: Batch) -> ModelOutput:
        """Encode, fuse and apply the head (after modality dropout, in training mode)."""
        if self.training and self.modality_dropout > 0:
            batch = drop_modalities(batch, self.modality_dropout)
        features = self.encode(batch)
        unimodal: dict[str, Tensor] = {}
        if self.unimodal_heads is not None:
            unimodal = {
                key: head(features[key].pooled) for key, head in self.unimodal_heads.items()
            }
        fusing = {key: EncoderOutput(out) for key, out in unimodal.items()} if self.late else None
        fused = self.fusion(fusing or features, batch.present)
        expected = (batch.size, self.fusion.output_dim)
        if not isinstance(fused, Tensor) or tuple(fused.shape) != expected:
            got = tuple(fused.shape) if isinstance(fused, Tensor) else type(fused).__name__
            raise ComponentError(f"{self.named(self.fusion)} returned {got}, expected {expected}")
        logits = fused if self.late else self.head(fused)
        return ModelOutput(logits, fused, features, unimodal, batch.present)

    def named(self, module: nn.Module, key: str | None = None) -> str:
        """How errors name the encoder of ``key`` (or the fusion): ``encoder 'bert' of key
        'text' (mmplug-text 0.1.0, BertEncoder)`` when built by name, else by class."""
        kind = "fusion" if key is None else f"encoder of key {key!r}"
        where = type(module).__name__
        if self.resolved is not None:
            spec = (self.resolved.fusion if key is None else self.resolved.encoders[key]).spec
            kind = f"{spec.kind} {spec.name!r}" + ("" if key is None else f" of key {key!r}")
            where = f"{spec.distribution} {spec.version}, {where}"
        return f"{kind} ({where})"

    def unimodal_losses(self, output: ModelOutput, targets: Tensor) -> dict[str, Tensor]:
        """Each unimodal head's loss over the samples that had its key (as the model saw
        them, after modality dropout); keys no sample of the batch had are left out, and a
        model without unimodal heads has none."""
        if self.unimodal_heads is None:
            return {}
        losses = {}
        for key, outputs in output.unimodal.items():
            rows = output.present[key]
            if bool(rows.any()):
                head = cast(Head, self.unimodal_heads[key])
                losses[key] = head.loss(outputs[rows].float(), targets[rows])
        return losses

    def describe(self) -> str:
        """A few lines on what was built: components, origins, dims and parameter counts."""
        resolved = self.resolved
        rows: list[tuple[str, str, nn.Module, ResolvedComponent | None, int]] = [
            (
                "encoder",
                key,
                encoder,
                resolved.encoders[key] if resolved else None,
                encoder.output_dim,
            )
            for key, encoder in self.encoder_items()
        ]
        rows.append(
            (
                "fusion",
                "",
                self.fusion,
                resolved.fusion if resolved else None,
                self.fusion.output_dim,
            )
        )
        origin = resolved.head if resolved else None
        if self.unimodal_heads is not None:
            for key, head in self.unimodal_heads.items():
                rows.append(("head", key, head, origin, cast(Head, head).output_dim))
        if not self.late:
            name = "fused" if self.unimodal_heads is not None else ""
            rows.append(("head", name, self.head, origin, self.head.output_dim))
        lines = []
        for kind, key, module, origin, dim in rows:
            count = sum(p.numel() for p in module.parameters())
            what = type(module).__name__
            if origin is not None:
                spec = origin.spec
                what = f"{spec.name} ({spec.distribution} {spec.version})"
            lines.append(f"  {kind:<8} {key:<10} {what:<40} -> {dim:<5} {count:>12,} params")
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        lines.append(f"  total: {total:,} parameters ({trainable:,} trainable)")
        return "\n".join(lines)


def combines_outputs(fusion: object) -> bool:
    """Whether a fusion (or its factory) combines the unimodal heads' outputs rather than the
    encoders' features (``Fusion.combines``)."""
    return getattr(fusion, "combines", "features") == "outputs"


def drop_modalities(batch: Batch, probability: float) -> Batch:
    """Make each present modality of each sample absent with ``probability``.

    A sample keeps at least one of the modalities it has: when every one of them would be
    dropped, one chosen at random stays. The encoders' inputs of dropped samples are removed,
    so encoders run on fewer rows. Draws from torch's random generator on the batch's device.
    """
    keys = sorted(batch.present)
    present = torch.stack([batch.present[key] for key in keys], dim=1)  # [B, K]
    drop = (torch.rand(present.shape, device=present.device) < probability) & present
    emptied = present.any(dim=1) & ~(present & ~drop).any(dim=1)
    if bool(emptied.any()):
        scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        rows = emptied.nonzero().squeeze(1)
        drop[rows, scores.argmax(dim=1)[rows]] = False
    kept = present & ~drop
    inputs: dict[str, dict[str, Tensor]] = {}
    encoded: dict[str, Encoded] = {}
    for column, key in enumerate(keys):
        still = kept[:, column][batch.present[key]]  # over the key's present rows
        known = batch.encoded.get(key)
        if known is not None:
            encoded[key] = known.rows(still)
            still = still[~known.known.to(still.device)]  # over the rows inputs has
        if bool(still.all()):
            inputs[key] = batch.inputs[key]
        else:
            inputs[key] = {n: t[still] for n, t in batch.inputs[key].items()} if still.any() else {}
    present_after = {key: kept[:, column] for column, key in enumerate(keys)}
    return Batch(size=batch.size, inputs=inputs, present=present_after, encoded=encoded)


def _check_encoder_output(who: str, encoder: Encoder, out: object, count: int) -> None:
    if not isinstance(out, EncoderOutput):
        raise ComponentError(f"{who} returned {type(out).__name__}, not EncoderOutput")
    if tuple(out.pooled.shape) != (count, encoder.output_dim):
        raise ComponentError(
            f"{who} returned pooled of shape {tuple(out.pooled.shape)}, "
            f"expected ({count}, {encoder.output_dim}) (present samples, output_dim)"
        )


def _merge(known: Tensor, outputs: EncoderOutput, computed: EncoderOutput) -> EncoderOutput:
    """The rows of ``outputs`` where ``known``, the rows of ``computed`` elsewhere (tokens
    padded to the longer of the two)."""
    known = known.to(outputs.pooled.device)
    pooled = outputs.pooled.new_zeros(known.shape[0], outputs.pooled.shape[1])
    pooled[known] = outputs.pooled
    pooled[~known] = computed.pooled.to(pooled.dtype)
    parts = (outputs.tokens, outputs.mask, computed.tokens, computed.mask)
    if any(part is None for part in parts):
        return EncoderOutput(pooled)
    old_tokens, old_mask, new_tokens, new_mask = cast(tuple[Tensor, Tensor, Tensor, Tensor], parts)
    length = max(old_tokens.shape[1], new_tokens.shape[1])
    tokens = old_tokens.new_zeros(known.shape[0], length, old_tokens.shape[2])
    mask = old_mask.new_zeros(known.shape[0], length)
    tokens[known, : old_tokens.shape[1]] = old_tokens
    mask[known, : old_mask.shape[1]] = old_mask
    tokens[~known, : new_tokens.shape[1]] = new_tokens.to(tokens.dtype)
    mask[~known, : new_mask.shape[1]] = new_mask
    return EncoderOutput(pooled, tokens, mask)


def _scatter(out: EncoderOutput, present: Tensor, size: int) -> EncoderOutput:
    """Put the present samples' outputs back in batch order; absent rows are zero, masked out."""
    if bool(present.all()):
        return out
    pooled = out.pooled.new_zeros(size, out.pooled.shape[1])
    pooled[present] = out.pooled
    if out.tokens is None or out.mask is None:
        return EncoderOutput(pooled)
    tokens = out.tokens.new_zeros(size, *out.tokens.shape[1:])
    tokens[present] = out.tokens
    mask = out.mask.new_zeros(size, out.mask.shape[1])
    mask[present] = out.mask
    return EncoderOutput(pooled, tokens, mask)
