"""Modality-grouped length sampling (SPEC §8.4, Video-LLaVA `LengthGroupedSampler(group_by_modality=True)`).

Lengths are word counts, positive for samples with an image or video and negative for text-only ones. Multimodal and
text-only indices are shuffled and length-grouped separately into megabatches of `world_size * batch * grad_acc`;
megabatches are interleaved at random and leftovers form the last one. Images and videos mix freely; text-only
samples get their own batches. The order is a pure function of `seed` (+ epoch), so a resumed run replays it.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def _length_grouped(lengths: list[int], megabatch: int, generator: torch.Generator) -> list[list[int]]:
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunks = [order[i : i + megabatch] for i in range(0, len(order), megabatch)]
    return [sorted(chunk, key=lambda i: lengths[i], reverse=True) for chunk in chunks]


def modality_length_grouped_indices(lengths: list[int], megabatch: int, generator: torch.Generator) -> list[int]:
    """One epoch of indices; see the module docstring."""
    if not lengths:
        return []
    multimodal = [i for i, n in enumerate(lengths) if n > 0]
    text = [i for i, n in enumerate(lengths) if n <= 0]
    groups = []
    for subset in (multimodal, text):
        if subset:
            sub_lengths = [abs(lengths[i]) for i in subset]
            groups.append([[subset[i] for i in mb] for mb in _length_grouped(sub_lengths, megabatch, generator)])
    full = [mb for g in groups for mb in g if len(mb) == megabatch]
    leftovers = [i for g in groups for mb in g if len(mb) < megabatch for i in mb]
    order = torch.randperm(len(full), generator=generator).tolist()
    megabatches = [full[i] for i in order]
    if leftovers:
        megabatches.append(sorted(leftovers, key=lambda i: abs(lengths[i]), reverse=True))
    return [i for mb in megabatches for i in mb]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields indices grouped by modality and length.

    Args:
        lengths: `modality_length` per sample (see `training.data`).
        megabatch_size: `world_size * per_device_batch * gradient_accumulation_steps`.
        seed: base seed; each epoch uses `seed + epoch` (the Trainer calls `set_epoch`).
    """

    def __init__(self, lengths: list[int], megabatch_size: int, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.megabatch_size = max(1, megabatch_size)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.megabatch_size, generator))
