"""The order of training samples as a pure function of (seed, epoch, position).

Resuming a killed run, or splitting a batch over processes, must not change
which images a step sees nor how they are augmented. So:

* epoch ``e`` visits the dataset in the permutation drawn from ``(seed, e)``;
* the run consumes *global micro-batches* of ``world_size * micro_batch`` images back to back (an epoch holds
  ``len(dataset) // global`` of them; the rest are dropped); rank ``r`` takes slice ``r`` of each;
* every sample carries its own augmentation seed drawn from ``(seed, epoch, position in the epoch)``, and
  :class:`SeededSamples` seeds torch / numpy / random with it just for the transform of that item.

A run restarted at micro-batch ``k`` therefore produces exactly the batches an uninterrupted run would have, on any
number of DataLoader workers; and a one-process run with batch ``2b`` sees the same images, augmented the same way, as
two processes with batch ``b`` each.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from integers, well spread (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_permutation(length: int, seed: int, epoch: int) -> list[int]:
    """The dataset order of ``epoch``."""
    generator = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    return torch.randperm(length, generator=generator).tolist()


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the sample at ``position`` of ``epoch``."""
    return _mix(seed, epoch, position, 0xA06)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless batch sampler over epochs, starting at any global micro-batch.

    Yields, for this rank, lists of ``(dataset index, augmentation seed)``.
    """

    def __init__(
        self,
        dataset_length: int,
        micro_batch: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        self.global_batch = micro_batch * world_size
        if dataset_length < self.global_batch:
            raise ValueError(
                f"the training set has {dataset_length} images, fewer than one global batch "
                f"({micro_batch} per process x {world_size} processes)"
            )
        self.length = dataset_length
        self.micro_batch = micro_batch
        self.seed = seed
        self.rank = rank
        self.start_batch = start_batch
        self.batches_per_epoch = dataset_length // self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            epoch, start = divmod(batch, self.batches_per_epoch)
            order = epoch_permutation(self.length, self.seed, epoch)
            for within in range(start, self.batches_per_epoch):
                first = within * self.global_batch + self.rank * self.micro_batch
                positions = range(first, first + self.micro_batch)
                yield [(order[p], sample_seed(self.seed, epoch, p)) for p in positions]
                batch += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is read with every RNG seeded by ``seed``.

    The caller's RNG states are restored afterwards, so reading a batch in the
    main process (``workers=0``) never disturbs the RNG that dropout draws from.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                image, mask = self.dataset[index]
                if self.transform is not None:
                    image, mask = self.transform(image, mask)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
        return image, mask
