"""Sharding for distributed training: each rank's share of every batch is the batch one
process would see, split, whatever the number of processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmplug
from mmplug.data.manifest import read_manifest
from mmplug.data.pipeline import ManifestDataset, Pipeline, make_loader
from mmplug.data.sharding import Ranks, per_rank_batch_size
from mmplug.errors import ConfigError, MmplugError
from mmplug.model.sections import DataConfig
from mmplug.model.tasks import ClassificationTask
from mmplug.plugins.host import PluginHost

from .training_helpers import write_rows

CONFIG = {
    "encoders": {"stats": {"name": "mlp", "input_size": 3, "dim": 6}},
    "fusion": {"name": "mean", "dim": 5},
    "head": {"name": "classification", "num_classes": 2},
}


@pytest.fixture
def dataset(toy_host: PluginHost, tmp_path: Path) -> ManifestDataset:
    pipeline = Pipeline.from_model(mmplug.build_model(CONFIG, registry=toy_host.registry))
    rows = [{"stats": [i, 0, 1], "label": "yes" if i % 2 else "no"} for i in range(23)]
    manifest = read_manifest(write_rows(tmp_path / "rows.jsonl", rows))
    return ManifestDataset.from_config(
        manifest,
        pipeline,
        DataConfig(train=manifest.path),
        task=ClassificationTask(("no", "yes")),
        missing="absent",
    )


def batches(dataset: ManifestDataset, ranks: Ranks | None, **loader: Any) -> list[list[int]]:
    return [b.indices for b in make_loader(dataset, batch_size=8, ranks=ranks, **loader)]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_ranks_shares_make_up_the_one_process_batches(
    dataset: ManifestDataset, train: bool, world: int
) -> None:
    for seed in (0, 7):
        alone = batches(dataset, None, train=train, seed=seed)
        shares = [
            batches(dataset, Ranks(rank, world), train=train, seed=seed) for rank in range(world)
        ]
        assert all(len(share) == len(alone) for share in shares)  # every rank, every step
        for step, batch in enumerate(alone):
            rows = [share[step] for share in shares]
            assert sorted(i for row in rows for i in row) == sorted(batch)
            for rank, row in enumerate(rows):
                assert row == batch[rank::world]  # rank r takes rows r, r + W, ...
    # the last batch (23 rows: 8, 8, 7) is shared as evenly as it goes, nothing twice
    last = [batches(dataset, Ranks(rank, 2), train=True)[-1] for rank in range(2)]
    assert [len(share) for share in last] == [4, 3]


def test_sharded_shuffling_follows_the_epoch_seed(dataset: ManifestDataset) -> None:
    share = batches(dataset, Ranks(1, 2), train=True, seed=3)
    assert share == batches(dataset, Ranks(1, 2), train=True, seed=3)
    assert share != batches(dataset, Ranks(1, 2), train=True, seed=4)


def test_ranks_come_from_torchruns_environment() -> None:
    assert Ranks.from_env({}) == Ranks(0, 1, 0) and Ranks.from_env({}).main
    ranks = Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ranks == Ranks(3, 4, 1) and not ranks.main
    with pytest.raises(MmplugError, match=r"WORLD_SIZE='two' is not a whole number"):
        Ranks.from_env({"WORLD_SIZE": "two"})
    with pytest.raises(MmplugError, match=r"RANK=4, WORLD_SIZE=4.*below the world size"):
        Ranks.from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_the_global_batch_must_divide_among_the_processes() -> None:
    assert per_rank_batch_size(32, 4) == 8 and per_rank_batch_size(7, 1) == 7
    with pytest.raises(ConfigError) as caught:
        per_rank_batch_size(30, 4)
    [issue] = caught.value.issues
    assert issue.path == "train.batch_size"
    assert "30 does not divide among 4 processes" in issue.message and "28, 32" in issue.message
