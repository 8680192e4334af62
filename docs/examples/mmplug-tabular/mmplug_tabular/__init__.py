"""mmplug-tabular: numeric feature columns as a modality, and an MLP encoder for them.

A complete third-party mmplug plugin, kept in mmplug's repository as the worked example of
docs/writing-plugins.md. It started as ``mmplug new-plugin tabular --kind modality``.

The entry point names this module, and mmplug imports it whenever it lists components: keep
it to hook implementations and params models. The modality and the encoder (torch) are named
by strings and imported only when a model is built.
"""

from __future__ import annotations

import mmplug
from mmplug import RegisterFn
from pydantic import Field, PositiveInt

__version__ = "0.1.0"
MMPLUG_API_VERSION = 1  # the mmplug plugin API this package is written for


class TabularMLPParams(mmplug.Params):
    """Parameters of the ``tabular-mlp`` encoder."""

    num_features: PositiveInt = Field(description="Feature columns per row.")
    hidden_dims: list[PositiveInt] = Field(
        default_factory=lambda: [64], description="Sizes of the hidden layers."
    )
    dim: PositiveInt = Field(default=64, description="Output size.")
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer."
    )
    freeze: bool = Field(default=False, description="Train nothing: no parameter gets gradients.")


@mmplug.hookimpl
def register_modalities(register: RegisterFn) -> None:
    register(
        "tabular",
        "mmplug_tabular.modality:TabularModality",
        summary="Numeric feature columns: a list, a mapping or 'a,b,c'; blanks are missing",
    )


@mmplug.hookimpl
def register_encoders(register: RegisterFn) -> None:
    register(
        "tabular-mlp",
        "mmplug_tabular.encoder:TabularMLP",
        params=TabularMLPParams,
        modality="tabular",
        summary="Standardized features + missing-value indicators through an MLP",
    )
