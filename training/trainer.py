"""`VideoLlavaSFTTrainer`: TRL's `SFTTrainer` plus the modality-grouped length sampler (SPEC §8.4)."""

from __future__ import annotations

import logging

from trl import SFTTrainer

from .sampler import ModalityLengthGroupedSampler


logger = logging.getLogger(__name__)


class VideoLlavaSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose train sampler groups samples by modality and length when `group_by_modality_length`.

    Args:
        group_by_modality_length: use `ModalityLengthGroupedSampler` over the dataset's `modality_length` column.
        *args, **kwargs: passed to `SFTTrainer`.
    """

    def __init__(self, *args, group_by_modality_length: bool = False, **kwargs) -> None:
        self.group_by_modality_length = group_by_modality_length
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_modality_length or dataset is None or "modality_length" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        megabatch = self.args.world_size * self.args.train_batch_size * self.args.gradient_accumulation_steps
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        logger.info("sampler: modality-grouped lengths, megabatch %d", megabatch)
        return ModalityLengthGroupedSampler(dataset["modality_length"], megabatch, seed=seed)
