"""Fixtures for mmplug-fusion's tests: a registry holding only this plugin, and fake features."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import Tensor

import mmplug_fusion
from mmplug import EncoderOutput
from mmplug.plugins.host import PluginHost
from mmplug.plugins.registry import ComponentSpec

DISTRIBUTION = "mmplug-fusion"


def fusion_specs() -> dict[str, ComponentSpec]:
    """The fusions this distribution registers, from a fresh host (autoload off)."""
    host = PluginHost(strict=True)
    host.add_module(
        "mmplug_fusion",
        name="fusion",
        distribution=DISTRIBUTION,
        version=mmplug_fusion.__version__,
    )
    return {
        spec.name: spec
        for spec in host.registry.components("fusion")
        if spec.distribution == DISTRIBUTION
    }


def build(spec: ComponentSpec, input_dims: Mapping[str, int], **params: Any) -> Any:
    """Build a fusion the way assembly does: validated params (defaults filled) as kwargs."""
    validated = spec.params(**params)
    return spec.load_factory()(input_dims=dict(input_dims), **dict(validated))


def make_features(
    dims: Mapping[str, int],
    present: Mapping[str, Tensor],
    *,
    seed: int = 0,
) -> dict[str, EncoderOutput]:
    """Random features shaped as assembly scatters them.

    Absent rows are zeros with a false mask; a key that no sample has gets ``tokens=None``.
    Modality ``i`` (in sorted order) has ``i + 2`` tokens with a random padding mask, the
    first token always real.
    """
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for index, key in enumerate(sorted(dims)):
        here = present[key]
        batch, dim = here.shape[0], dims[key]
        pooled = torch.randn(batch, dim, generator=generator)
        pooled = torch.where(here.unsqueeze(-1), pooled, 0.0)
        if not bool(here.any()):
            features[key] = EncoderOutput(pooled)
            continue
        tokens = torch.randn(batch, index + 2, dim, generator=generator)
        mask = torch.rand(batch, index + 2, generator=generator) < 0.7
        mask[:, 0] = True  # like most encoders: at least one real token per present sample
        mask &= here.unsqueeze(-1)
        tokens = torch.where(mask.unsqueeze(-1), tokens, 0.0)
        features[key] = EncoderOutput(pooled, tokens, mask)
    return features


def presence(rows: list[str], keys: list[str]) -> dict[str, Tensor]:
    """``present`` from one string per row listing the letters of the keys it has.

    ``presence(["ab", "", "b"], ["a", "b"])``: row 0 has both, row 1 none, row 2 only b.
    The letter of a key is its first character.
    """
    return {key: torch.tensor([key[0] in row for row in rows]) for key in keys}


@pytest.fixture(scope="session")
def specs() -> dict[str, ComponentSpec]:
    """name -> spec of every fusion this distribution registers."""
    return fusion_specs()


# The helpers as fixtures: test modules are imported with --import-mode=importlib, so they
# can't import this conftest by name.
@pytest.fixture(scope="session", name="build")
def _build() -> Callable[..., Any]:
    return build


@pytest.fixture(scope="session", name="make_features")
def _make_features() -> Callable[..., dict[str, EncoderOutput]]:
    return make_features


@pytest.fixture(scope="session", name="presence")
def _presence() -> Callable[[list[str], list[str]], dict[str, Tensor]]:
    return presence


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one thread: these tensors are tiny, and on a busy 2-core machine intra-op
    threads only contend (the suite ran 3x slower with them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
