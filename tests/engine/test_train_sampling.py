"""The data order is a pure function of (seed, epoch, position): what resume and DDP rely on."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from fcnseg.engine.sampling import EpochBatchSampler, SeededSamples, epoch_permutation


def _take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    first, second = epoch_permutation(10, 3, 0), epoch_permutation(10, 3, 1)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second
    assert epoch_permutation(10, 3, 0) == first  # a function of (seed, epoch) alone
    assert epoch_permutation(10, 4, 0) != first


def test_starting_later_gives_the_tail_of_the_same_stream():
    whole = _take(EpochBatchSampler(10, 3, seed=7), 12)  # 3 batches per epoch, 4 epochs
    for start in (1, 3, 5):
        assert _take(EpochBatchSampler(10, 3, seed=7, start_batch=start), 12 - start) == whole[start:]


def test_epoch_drops_the_remainder_and_covers_distinct_images():
    batches = _take(EpochBatchSampler(10, 3, seed=0), 3)
    indices = [index for batch in batches for index, _ in batch]
    assert len(indices) == 9 and len(set(indices)) == 9


def test_ranks_split_the_global_batch_of_one_process():
    single = _take(EpochBatchSampler(12, 4, seed=5), 6)
    rank0 = _take(EpochBatchSampler(12, 2, seed=5, rank=0, world_size=2), 6)
    rank1 = _take(EpochBatchSampler(12, 2, seed=5, rank=1, world_size=2), 6)
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == single  # same images, same augmentation seeds


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochBatchSampler(3, 2, seed=0, world_size=2)


class _RandomItems(torch.utils.data.Dataset):
    """Items made of draws from every RNG, to see what seeds them."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(2), torch.tensor([random.random(), float(np.random.rand())])


def test_seeded_samples_are_reproducible_and_leave_the_callers_rng_alone():
    samples = SeededSamples(_RandomItems())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = samples[(1, 42)]
    assert torch.equal(torch.get_rng_state(), before)
    again = samples[(3, 42)]
    other = samples[(1, 43)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # the seed decides, not the index
    assert not torch.equal(first[0], other[0])
