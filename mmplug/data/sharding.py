"""Sharding for distributed training: which process this is, and its share of each batch.

Under ``torchrun`` every process (rank) reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
from its environment (:meth:`Ranks.from_env`). ``train.batch_size`` stays the *global*
batch: each rank takes its share of every batch of the one-process order
(:class:`ShardedBatches`), so the batches, and with them the learning-rate schedule and the
metrics, do not depend on how many processes share the work.

Every rank makes the same order: the loader's generator is seeded from ``(seed, epoch)`` as
in one process (:func:`mmplug.data.pipeline.make_loader`), and the sampler draws from it
exactly as the one-process loader's does. Rank ``r`` of ``W`` takes rows ``r, r + W, ...``
of each batch; in a last batch shorter than ``W`` some ranks get none.

:func:`~mmplug.data.pipeline.make_loader` takes the ranks. This is the first step of running
under torchrun: the trainer does not pass them yet (it runs as one process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass

from torch.utils.data import Sampler

from mmplug.errors import ConfigError, ConfigIssue, MmplugError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes.

    Attributes:
        rank: ``0`` .. ``world - 1``, across every node.
        world: how many processes train together.
        local_rank: the rank on this node (which GPU it takes).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """What torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process when
        none is set.

        Raises:
            MmplugError: a value that is not a whole number, or a rank outside the world.
        """
        env = os.environ if environ is None else environ
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            text = env.get(name)
            try:
                values[name] = default if text in (None, "") else int(text)
            except ValueError:
                raise MmplugError(f"{name}={text!r} is not a whole number") from None
        ranks = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
        if ranks.world < 1 or not 0 <= ranks.rank < ranks.world or ranks.local_rank < 0:
            raise MmplugError(
                f"RANK={ranks.rank}, WORLD_SIZE={ranks.world}, LOCAL_RANK={ranks.local_rank}: "
                "a rank must be at least 0 and below the world size"
            )
        return ranks

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory and the log (rank 0)."""
        return self.rank == 0


def per_rank_batch_size(batch_size: int, world: int, *, field: str = "train.batch_size") -> int:
    """Each rank's share of a global batch of ``batch_size``.

    Raises:
        ConfigError: ``batch_size`` does not divide by ``world``, naming ``field`` and the
            sizes that would.
    """
    if batch_size % world:
        below = batch_size - batch_size % world
        options = ", ".join(str(size) for size in (below, below + world) if size > 0)
        raise ConfigError(
            [
                ConfigIssue(
                    field,
                    f"{batch_size} does not divide among {world} processes (the global batch "
                    f"is split evenly): use a multiple of {world}, such as {options}",
                )
            ]
        )
    return batch_size // world


class ShardedBatches(Sampler[list[int]]):
    """This rank's share of each batch of ``batches`` (the one-process batch sampler).

    Args:
        batches: yields the global batches, the same on every rank.
        ranks: which share to take.
    """

    def __init__(self, batches: Sampler[list[int]], ranks: Ranks) -> None:
        self.batches = batches
        self.ranks = ranks

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.ranks.rank :: self.ranks.world]

    def __len__(self) -> int:
        assert isinstance(self.batches, Sized)
        return len(self.batches)
