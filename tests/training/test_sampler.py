"""Modality-grouped sampler: text-only and multimodal never share a megabatch; order is seeded."""

import torch

from training.sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices


def test_grouping_and_determinism():
    lengths = [5, -3, 7, -2, 9, 4, -8, 6, 1, -1, 3, 2]
    mb = 4
    idx = modality_length_grouped_indices(lengths, mb, torch.Generator().manual_seed(0))
    assert sorted(idx) == list(range(len(lengths)))
    full = [idx[i : i + mb] for i in range(0, len(idx) - len(idx) % mb, mb)][:-1]  # last may hold leftovers
    for chunk in full:
        assert len({lengths[i] > 0 for i in chunk}) == 1
    sampler = ModalityLengthGroupedSampler(lengths, mb, seed=3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)
