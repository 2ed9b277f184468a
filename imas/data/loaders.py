"""Train and val DataLoaders: epoch-seeded order, labeled oversampling, rank shards, reproducible workers;
and `to_device`, which moves a collated batch to the training device.

Reproducibility contract: the global order of epoch e depends only on (seed, stream, e), so every rank draws
the same permutation and takes a disjoint shard, and a resumed run sees the same data as an uninterrupted
one. Worker RNGs are seeded from (seed, stream, e, rank) by re-seeding each loader's generator in
`TrainLoaders.set_epoch`; workers are not persistent, so the new seed takes effect every epoch.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from imas.config import DataConfig
from imas.data.datasets import Datasets
from imas.errors import DataError

LABELED_STREAM, UNLABELED_STREAM = 0, 1
_ORDER, _WORKERS = 0, 1  # what a derived seed is for, so the two never coincide


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys, so that nearby keys give unrelated random streams."""
    # The key count goes first: SeedSequence alone maps (a, b) and (a, b, 0) to the same stream.
    entropy = [len(keys), *(k % 2**64 for k in keys)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


class EpochShardSampler(Sampler[int]):
    """`epoch_length` indices into `num_items` items per epoch; this rank's strided shard of them.

    When epoch_length > num_items the items are oversampled: each appears floor(L/N) times plus one more for a
    random (L mod N) of them, so every item appears floor(L/N) or ceil(L/N) times. The global order is cut to
    a whole number of global batches (drop_last) so all ranks run the same number of iterations.
    """

    def __init__(
        self,
        num_items: int,
        epoch_length: int,
        batch_size: int,
        seed: int,
        stream: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.num_items, self.epoch_length = num_items, epoch_length
        self.seed, self.stream, self.rank, self.world_size = seed, stream, rank, world_size
        self.iters = epoch_length // (batch_size * world_size)
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self, epoch: int) -> list[int]:
        """The global order of `epoch` (identical on every rank): epoch_length item indices."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.stream, epoch, _ORDER))
        copies, extra = divmod(self.epoch_length, self.num_items)
        pool = list(range(self.num_items)) * copies
        pool += torch.randperm(self.num_items, generator=generator)[:extra].tolist()
        return [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]

    def __iter__(self) -> Iterator[int]:
        used = self.iters * self.batch_size * self.world_size
        return iter(self.epoch_order(self.epoch)[self.rank : used : self.world_size])

    def __len__(self) -> int:
        return self.iters * self.batch_size


class StridedSampler(Sampler[int]):
    """Indices rank, rank + W, rank + 2W, ...: every item exactly once over all ranks, no padding."""

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# How long a worker that let a SIGTERM pass waits to be ended before it leaves by itself.
WORKER_GRACE_S = 30.0


def _pass_first_sigterm(signum: int, frame: Any) -> None:
    """The run is ending: the next SIGTERM ends this worker, and a batch the main process stops receiving
    midway is no news (multiprocessing's thread that hands tensors' file descriptors over prints such a
    broken connection through sys.excepthook). If nothing ends it within WORKER_GRACE_S, it leaves: a worker
    its iterator never recorded (a stop that landed while the iterator started its workers) is ended only by
    multiprocessing's exit handler, whose SIGTERM may be this first one, passed, while it waits for the
    worker to end."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.excepthook = partial(_quiet_lost_connection, sys.excepthook)
    leave = threading.Timer(WORKER_GRACE_S, os._exit, args=(0,))
    leave.daemon = True
    leave.start()


def _quiet_lost_connection(previous: Any, kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if not issubclass(kind, (OSError, EOFError)):
        previous(kind, value, tb)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a worker from its torch seed (distinct per worker, rank and epoch), and
    leave SIGTERM to the main process.

    A scheduler's stop (`scancel`, `docker stop`, `kill -- -PGID`) sends SIGTERM to the whole process group:
    a worker killed by it makes the main process raise "DataLoader worker is killed by signal" (a traceback,
    sometimes exit 1) while it is ending the run. So a worker lets the first SIGTERM pass and is shut down by
    the main process as it ends (or leaves by itself when it is gone); a second one, e.g. the DataLoader's
    own `terminate()` of a worker that did not stop in time, ends it as usual."""
    signal.signal(signal.SIGTERM, _pass_first_sigterm)
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global numpy RNG is what third-party code draws from
    random.seed(seed)


@dataclass
class TrainLoaders:
    labeled: DataLoader
    unlabeled: DataLoader | None
    iters_per_epoch: int
    seed: int = 0
    rank: int = 0
    labeled_iters: int = 0  # the iterations of one pass over the labeled images (each rank its share)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s order and worker seeds; call before iterating the loaders each epoch."""
        for stream, loader in ((LABELED_STREAM, self.labeled), (UNLABELED_STREAM, self.unlabeled)):
            if loader is None:
                continue
            loader.sampler.set_epoch(epoch)
            loader.generator.manual_seed(derive_seed(self.seed, stream, epoch, _WORKERS, self.rank))


def build_train_loaders(
    cfg: DataConfig, datasets: Datasets, batch_size: int, seed: int, rank: int, world_size: int
) -> TrainLoaders:
    """Labeled (and unlabeled) loaders of `batch_size` per rank with iters_per_epoch batches each.

    An epoch is one pass over the unlabeled split when one is configured (also for supervised-only runs, so
    both train the same number of iterations), else one pass over the labeled set.
    """
    epoch_length = datasets.unlabeled_count or len(datasets.labeled)
    iters = epoch_length // (batch_size * world_size)
    if iters == 0:
        raise DataError(
            f"an epoch of {epoch_length} images is smaller than one global batch of "
            f"{batch_size * world_size} ({batch_size} per device x {world_size} devices)"
        )
    labeled = _train_loader(
        cfg, datasets.labeled, epoch_length, batch_size, seed, LABELED_STREAM, rank, world_size
    )
    unlabeled = None
    if datasets.unlabeled is not None:
        unlabeled = _train_loader(
            cfg, datasets.unlabeled, epoch_length, batch_size, seed, UNLABELED_STREAM, rank, world_size
        )
    # As the released PS-MT's distributed loader passes over them (DistributedSampler, drop_last): the whole
    # batches of each rank's ceil(N / W) images, at least one.
    labeled_iters = max(1, math.ceil(len(datasets.labeled) / world_size) // batch_size)
    loaders = TrainLoaders(labeled, unlabeled, iters, seed=seed, rank=rank, labeled_iters=labeled_iters)
    loaders.set_epoch(0)
    return loaders


def _train_loader(
    cfg: DataConfig,
    dataset: Dataset,
    epoch_length: int,
    batch_size: int,
    seed: int,
    stream: int,
    rank: int,
    world_size: int,
) -> DataLoader:
    assert isinstance(dataset, Sized)
    sampler = EpochShardSampler(len(dataset), epoch_length, batch_size, seed, stream, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=torch.Generator(),
        persistent_workers=False,
    )


def build_val_loader(cfg: DataConfig, dataset: Dataset, rank: int, world_size: int) -> DataLoader:
    """Batch size 1, images in index order, rank r gets indices r, r + W, ... (each image once overall)."""
    assert isinstance(dataset, Sized)
    return DataLoader(
        dataset,
        batch_size=1,
        sampler=StridedSampler(len(dataset), rank, world_size),
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Move the tensors of a collated batch to the device (images stay uint8 until normalised there)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out
