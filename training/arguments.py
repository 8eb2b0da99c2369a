"""Command-line / YAML arguments of `videollava train`: data, model, stage, export, and TRL's `SFTConfig`.

All fields are flat, typed dataclass fields, so the same names work in a preset YAML (`--config`) and as
`--flag value` overrides (TRL's `TrlParser`). `parse_args` also pins the SFTConfig settings our collator relies on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from trl import SFTConfig, TrlParser

from .data import DataSource
from .stages import StageArguments, check_qlora


logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """Training data and how it is read."""

    dataset: list[str] = field(
        default_factory=list, metadata={"help": "LLaVA JSON/JSONL file, `datasets` folder or Hub id (repeatable)"}
    )
    image_folder: list[str] = field(
        default_factory=list, metadata={"help": "image root: one for all datasets or one per --dataset"}
    )
    video_folder: list[str] = field(
        default_factory=list, metadata={"help": "video root: one for all datasets or one per --dataset"}
    )
    dataset_weights: list[float] = field(
        default_factory=list, metadata={"help": "sampling weight per --dataset (2.0 = twice, 0.5 = half)"}
    )
    num_frames: int | None = field(default=None, metadata={"help": "frames per video (default: the video tower's)"})
    strict: bool = field(default=False, metadata={"help": "fail on the first bad sample instead of skipping it"})
    max_skipped_fraction: float = field(
        default=0.05, metadata={"help": "fail the run when more than this fraction of samples was skipped"}
    )
    skip_min_seen: int = field(
        default=50, metadata={"help": "samples drawn before --max_skipped_fraction is checked during training "
                                      "(loading the data and the end of training always check)"}
    )
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "group multimodal vs text-only samples by length (SPEC §8.4)"}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "target global batch; sets gradient_accumulation_steps = global / (per_device * world)"},
    )

    def sources(self) -> list[DataSource]:
        """One `DataSource` per `--dataset`, pairing folders and weights (a single value applies to all)."""
        n = len(self.dataset)

        def per_dataset(values: list, name: str, default):
            if not values:
                return [default] * n
            if len(values) == 1:
                return values * n
            if len(values) != n:
                raise ValueError(f"--{name} needs 1 or {n} values (one per --dataset), got {len(values)}")
            return values

        images = per_dataset(self.image_folder, "image_folder", None)
        videos = per_dataset(self.video_folder, "video_folder", None)
        weights = per_dataset(self.dataset_weights, "dataset_weights", 1.0)
        return [DataSource(p, i, v, float(w)) for p, i, v, w in zip(self.dataset, images, videos, weights)]


@dataclass
class ModelArguments:
    """Where the model starts from: a Video-LLaVA checkpoint, or a pretrained LLM + LanguageBind towers."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Video-LLaVA checkpoint (stage 2: stage 1's output) — folder or Hub id"}
    )
    language_model: str | None = field(default=None, metadata={"help": "stage 1: pretrained LLM (e.g. lmsys/vicuna-7b-v1.5)"})
    image_tower: str | None = field(default=None, metadata={"help": "stage 1: LanguageBind/LanguageBind_Image"})
    video_tower: str | None = field(default=None, metadata={"help": "stage 1: LanguageBind/LanguageBind_Video_merge"})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "weights dtype when loading"}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa | flash_attention_2"})
    load_4bit: bool = field(
        default=False,
        metadata={"help": "QLoRA: load the language model in 4 bit (NF4, double quantization; towers and projector "
                          "stay in the compute dtype) and train LoRA adapters on it (needs --train_language_model lora)"},
    )


@dataclass
class ExportArguments:
    """What happens after training: LoRA merge and the model card."""

    merge_lora: bool = field(default=True, metadata={"help": "after a LoRA run, also write a merged model"})
    card_base_models: list[str] = field(default_factory=list, metadata={"help": "base model ids for the card"})
    card_datasets: list[str] = field(default_factory=list, metadata={"help": "dataset ids for the card"})
    license: str = field(default="apache-2.0", metadata={"help": "license for the model card"})


ALL_ARGUMENTS = (DataArguments, ModelArguments, StageArguments, ExportArguments, SFTConfig)


def parse_args(
    argv: list[str] | None = None,
) -> tuple[DataArguments, ModelArguments, StageArguments, ExportArguments, SFTConfig]:
    """Parse `--config PRESET.yaml` plus overrides; pins the SFTConfig settings the custom collator needs."""
    parser = TrlParser(ALL_ARGUMENTS)
    data, model, stage, export, training = parser.parse_args_and_config(argv)
    if model.load_4bit:
        check_qlora(stage)
    prepare_training_args(training)
    return data, model, stage, export, training


def prepare_training_args(training: SFTConfig) -> SFTConfig:
    """Settings TRL 1.16 needs for a custom vision collator (ECOSYSTEM §3, STYLE §5.6)."""
    if training.packing or training.padding_free:
        raise ValueError("--packing / --padding_free are not supported for image/video data")
    training.remove_unused_columns = False  # keep `images` / `videos` for the collator
    training.dataset_kwargs = {**(training.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training.assistant_only_loss = False  # the collator masks labels itself (SPEC §6.3)
    return training
