"""The ``data`` and ``train`` sections of a config: where the examples are and how to learn.

Like the ``model`` section they are data only, validated by pydantic when the config is
read; every field has a default except the training manifest. ``mmplug train`` writes them
back into the run's ``config.yaml`` with every default filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from mmplug.model.tasks import class_name


class DataConfig(BaseModel):
    """The ``data`` section: manifests, which column each modality key reads, the labels."""

    model_config = ConfigDict(extra="forbid")

    train: Path = Field(description="Training manifest (JSONL or CSV).")
    val: Path | None = Field(
        default=None, description="Validation manifest: metrics each epoch, early stopping."
    )
    test: Path | None = Field(default=None, description="Test manifest, evaluated at the end.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Modality key -> manifest column; a key not listed reads the column of "
        "its own name.",
    )
    label: str = Field(default="label", description="The column holding the target.")
    classes: list[str] | None = Field(
        default=None,
        description="Class names in output order; default: the sorted labels of the "
        "training manifest.",
    )
    label_separator: str = Field(
        default="|",
        min_length=1,
        description="Separates a multilabel row's labels in a CSV cell (JSONL uses lists).",
    )
    require_all: bool = Field(
        default=False, description="A missing value is an error instead of an absent modality."
    )
    on_error: Literal["raise", "skip"] = Field(
        default="raise",
        description="A row that can't be read stops the run ('raise') or is skipped, counted "
        "and listed in skipped.jsonl ('skip').",
    )
    num_workers: int = Field(
        default=0, ge=0, description="DataLoader worker processes loading and preprocessing."
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _names_as_text(cls, value: object) -> object:
        # YAML reads `classes: [0, 1]` as ints; names are compared as label cells are read.
        if not isinstance(value, list):
            return value
        if any(isinstance(item, bool) for item in value):
            raise ValueError(
                "YAML reads yes/no/true/false as booleans: quote class names ('yes', 'no')"
            )
        names = [class_name(item) if isinstance(item, int | float) else item for item in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must be distinct; repeated: {', '.join(repeated)}")
        return names


class TrainConfig(BaseModel):
    """The ``train`` section: optimizer, schedule, precision, stopping."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no lr: .inf

    epochs: PositiveInt = Field(default=10, description="Passes over the training manifest.")
    max_steps: PositiveInt | None = Field(
        default=None, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: PositiveInt = Field(default=32, description="Examples per forward pass.")
    grad_accumulation: PositiveInt = Field(
        default=1, description="Forward passes per optimizer step."
    )
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate (AdamW).")
    encoder_lr: PositiveFloat | dict[str, PositiveFloat] | None = Field(
        default=None,
        description="Peak learning rate of the encoders, or of each modality key's encoder "
        "({audio: 0.0005}; keys not listed use lr); default: lr.",
    )
    encoder_warmup: NonNegativeFloat | dict[str, NonNegativeFloat] | None = Field(
        default=None,
        description="Warmup of the encoders' learning rates, as train.warmup (a fraction of "
        "all steps below 1, else a step count): one for every encoder, or one per modality "
        "key ({image: 0.3}; keys not listed use warmup); default: warmup.",
    )
    unimodal_loss: NonNegativeFloat | dict[str, NonNegativeFloat] | Literal["auto"] = Field(
        default=1.0,
        description="Weight of each unimodal head's loss, added to the fused loss: one for "
        "every key, or one per key ({audio: 2.0}; keys not listed: 1.0), or 'auto' "
        "(Gradient-Blending: every head's weight, the fused one's too, estimated before "
        "each epoch from the third on, from its generalization and overfitting since the "
        "first). Used when the model has unimodal heads (model.unimodal_heads, or the late "
        "fusion).",
    )
    modulation: float = Field(
        default=0.0,
        ge=0,
        description="Gradient modulation (OGM) strength alpha: each step, the encoder whose "
        "unimodal head leads gets its gradients scaled by 1 - tanh(alpha * (ratio - 1)); "
        "0 is off. Needs unimodal heads.",
    )
    reliance: bool = Field(
        default=True,
        description="Each epoch, also evaluate the val split with each modality blanked out "
        "(val_without_<key>_<metric>) and warn when the model ignores one.",
    )
    weight_decay: float = Field(
        default=0.01, ge=0, description="AdamW weight decay (not applied to biases and norms)."
    )
    warmup: float = Field(
        default=0.1,
        ge=0,
        description="Linear warmup: a fraction of all steps if below 1, else a step count.",
    )
    min_lr_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Where the cosine decay ends, as a fraction of lr."
    )
    grad_clip: float | None = Field(
        default=1.0, gt=0, description="Clip the gradients' global norm; null: no clipping."
    )
    seed: int = Field(default=0, ge=0, lt=2**63, description="Same seed and data: same metrics.")
    device: str = Field(
        default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ..."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="Mixed precision; fp16 uses a gradient scaler."
    )
    monitor: str = Field(
        default="val_loss",
        description="Metric that picks the best checkpoint: val_loss or val_<metric>.",
    )
    monitor_mode: Literal["auto", "min", "max"] = Field(
        default="auto", description="Whether lower or higher is better; auto knows losses."
    )
    patience: PositiveInt | None = Field(
        default=None, description="Stop after this many epochs without improvement."
    )
    eval_batch_size: PositiveInt | None = Field(
        default=None, description="Batch size for evaluation; default: batch_size."
    )
    feature_cache: str = Field(
        default="auto",
        min_length=1,
        description="Keep frozen encoders' outputs on disk and read them back in later epochs "
        "and runs: 'auto' (in the user cache folder, or $MMPLUG_CACHE_DIR), 'off', or a "
        "folder. Only encoders that are frozen, stay in eval mode and preprocess "
        "deterministically are cached; the run says which.",
    )

    @field_validator("feature_cache", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false (and `on` as true)
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    feature_cache_limit_gb: PositiveFloat = Field(
        default=20.0,
        description="Past this size on disk, the feature cache drops its least recently "
        "used entries.",
    )
    feature_cache_files: Literal["stat", "content"] = Field(
        default="stat",
        description="How the feature cache tells a file has changed: 'stat' (path, size, "
        "modification and change times, inode) or 'content' (a digest of the bytes, read "
        "every epoch).",
    )


def per_key(chosen: float | Mapping[str, float] | None, key: str, default: float) -> float:
    """A per-encoder setting (``encoder_lr``, ``encoder_warmup``, ``unimodal_loss``) for
    modality ``key``: one value for all keys, one per key, or ``default`` (for None, or a
    key not listed)."""
    if isinstance(chosen, Mapping):
        chosen = chosen.get(key)
    return default if chosen is None else float(chosen)
