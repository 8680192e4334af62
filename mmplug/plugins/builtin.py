"""Core's default plugin: the task heads and the ``late`` fusion, registered through the
same hooks as any plugin.

Cheap to import (pydantic only); the torch modules live in :mod:`mmplug.model.heads` and
:mod:`mmplug.model.late` and are imported when a component is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from mmplug.plugins.hookspecs import API_VERSION, hookimpl
from mmplug.plugins.params import Params
from mmplug.plugins.registry import RegisterFn

MMPLUG_API_VERSION = API_VERSION


class _MLPParams(Params):
    hidden_dims: list[PositiveInt] = Field(
        default_factory=list, description="Sizes of hidden layers before the output layer."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before each layer.")


class ClassificationParams(_MLPParams):
    """Single-label classification."""

    num_classes: int | None = Field(
        default=None,
        ge=2,
        description="Number of classes; null: as many as the training data has (mmplug "
        "train fills it in).",
    )
    label_smoothing: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Label smoothing of the cross-entropy."
    )


class MultilabelParams(_MLPParams):
    """Multi-label classification."""

    num_labels: int | None = Field(
        default=None,
        ge=1,
        description="Number of independent labels; null: as many as the training data has "
        "(mmplug train fills it in).",
    )


class RegressionParams(_MLPParams):
    """Regression of one or more real values."""

    num_targets: int = Field(default=1, ge=1, description="Number of values predicted per sample.")


class LateParams(Params):
    """Late fusion: the unimodal heads' outputs averaged."""

    weights: Literal["learned", "equal"] = Field(
        default="learned",
        description="Weights of the average over the keys a sample has: learned (a softmax, "
        "starting equal) or equal.",
    )


@hookimpl
def register_fusions(register: RegisterFn) -> None:
    register(
        "late",
        "mmplug.model.late:LateFusion",
        params=LateParams,
        summary="Late fusion: a weighted average of one head per modality (unimodal heads)",
    )


@hookimpl
def register_heads(register: RegisterFn) -> None:
    register(
        "classification",
        "mmplug.model.heads:ClassificationHead",
        params=ClassificationParams,
        summary="Single-label classification: softmax, cross-entropy; accuracy, macro-F1, AUROC",
    )
    register(
        "multilabel",
        "mmplug.model.heads:MultilabelHead",
        params=MultilabelParams,
        summary="Multi-label classification: sigmoid, binary cross-entropy; mAP, F1",
    )
    register(
        "regression",
        "mmplug.model.heads:RegressionHead",
        params=RegressionParams,
        summary="Regression: mean squared error; MAE, RMSE, R2",
    )
