"""`videollava train`: one Video-LLaVA training stage on TRL's `SFTTrainer`.

Run as:
    videollava train --config training/configs/stage1.yaml --language_model lmsys/vicuna-7b-v1.5 \
        --image_tower LanguageBind/LanguageBind_Image --video_tower LanguageBind/LanguageBind_Video_merge \
        --dataset pretrain.json --image_folder data --video_folder data --output_dir out/stage1
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml -m training \
        --config training/configs/stage2_lora.yaml --model_name_or_path out/stage1 --dataset tune.json ...

Every flag of the presets (`training/configs/*.yaml`), `StageArguments`, `DataArguments`, `ModelArguments`,
`ExportArguments` and TRL's `SFTConfig` can be overridden on the command line. A run restarted with the same
`--output_dir` resumes from its last checkpoint (`--resume_from_checkpoint none` starts over).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from argparse import Namespace
from dataclasses import asdict
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from .arguments import DataArguments, ExportArguments, ModelArguments, parse_args
from .collator import VideoLlavaCollator
from .data import load_training_data
from .export import load_model, load_processor, push_folder, save_folder
from .media import SkipLedger, SkippedMediaSummary
from .stages import StageArguments, apply_stage, log_trainable, lora_config
from .trainer import VideoLlavaSFTTrainer


logger = logging.getLogger(__name__)


################
# Model
################
def _local(path: str) -> str:
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path)


def build_model(model_args: ModelArguments, output_dir: str, trust_remote_code: bool = True):
    """Load `model_name_or_path`, or assemble stage 1's start from a pretrained LLM + LanguageBind towers."""
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
    elif model_args.language_model and model_args.image_tower and model_args.video_tower:
        from modeling_videollava.convert import convert

        path = os.path.join(output_dir, "init")
        if not os.path.exists(os.path.join(path, "config.json")):
            logger.info("assembling %s + %s + %s -> %s", model_args.language_model, model_args.image_tower,
                        model_args.video_tower, path)
            convert(Namespace(
                source="languagebind", to="ours", input=_local(model_args.language_model), output=path,
                image_tower=_local(model_args.image_tower), video_tower=_local(model_args.video_tower),
                tokenizer=None, num_frames=8, tower_hidden_act=None, video_feature_select="cls_patch",
                dtype="keep", max_shard_size="5GB",
            ))
    else:
        raise ValueError("pass --model_name_or_path, or --language_model with --image_tower and --video_tower")
    model = load_model(path, model_args.dtype, model_args.attn_implementation, trust_remote_code)
    return model, path


def base_model_ids(model_args: ModelArguments) -> list[str]:
    ids = [model_args.model_name_or_path, model_args.language_model, model_args.image_tower, model_args.video_tower]
    return [i for i in ids if i and not os.path.isdir(i)]


################
# Training
################
def set_global_batch(training, global_batch_size: int | None) -> None:
    """gradient_accumulation_steps = global / (per_device * world), so presets keep the paper's global batch."""
    if not global_batch_size:
        return
    per_step = training.per_device_train_batch_size * training.world_size
    steps = max(1, math.ceil(global_batch_size / per_step))
    if steps * per_step != global_batch_size:
        logger.warning("global batch %d is not a multiple of %d; using %d", global_batch_size, per_step,
                       steps * per_step)
    training.gradient_accumulation_steps = steps
    logger.info("global batch %d = %d per device x %d processes x %d accumulation", steps * per_step,
                training.per_device_train_batch_size, training.world_size, steps)


def resume_checkpoint(training) -> str | None:
    """`--resume_from_checkpoint` as given; by default the last `checkpoint-*` in `output_dir`, if any."""
    value = training.resume_from_checkpoint
    if value is not None and str(value).lower() in ("none", "false", "no"):
        return None
    if value not in (None, "", "auto", "last", "true", "True"):
        return value
    last = get_last_checkpoint(training.output_dir) if os.path.isdir(training.output_dir) else None
    if last:
        logger.info("resuming from %s", last)
    return last


def train(
    data_args: DataArguments,
    model_args: ModelArguments,
    stage: StageArguments,
    export: ExportArguments,
    training,
    model: Any = None,
    processor: Any = None,
) -> dict[str, Any]:
    """Run one stage end to end; returns a summary (`output_dir`, `merged_dir`, `losses`, `trainable`, `global_step`)."""
    if model is None:
        model, source = build_model(model_args, training.output_dir, training.trust_remote_code)
    else:
        source = model_args.model_name_or_path or "in-memory model"
    if processor is None:
        processor = load_processor(source, training.trust_remote_code)
    trainable = apply_stage(model, stage)
    peft_config = lora_config(stage)

    ################
    # Dataset
    ################
    dataset = load_training_data(data_args.sources(), strict=data_args.strict, seed=training.seed)
    num_frames = data_args.num_frames or model.config.video_config.num_frames
    collator = VideoLlavaCollator(
        processor, num_frames=num_frames, max_length=training.max_length, strict=data_args.strict,
        ledger=SkipLedger(training.output_dir, data_args.max_skipped_fraction),
    )

    set_global_batch(training, data_args.global_batch_size)
    push, repo_id = training.push_to_hub, training.hub_model_id
    training.push_to_hub = False  # we push the finished folder ourselves (card, merged weights), never checkpoints
    if push and not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    trainer = VideoLlavaSFTTrainer(
        model=model, args=training, train_dataset=dataset, data_collator=collator, processing_class=processor,
        peft_config=peft_config, callbacks=[SkippedMediaSummary(training.output_dir)],
        group_by_modality_length=data_args.group_by_modality_length,
    )
    if peft_config is not None:
        trainable = log_trainable(trainer.model)
    plugin = trainer.accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:  # ranks must touch the same parameters (USER_NEEDS a10)
        model.config.run_unused_towers = True
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(training))
    model.config.run_unused_towers = False

    ################
    # Save / export
    ################
    card = {
        "repo_id": repo_id or os.path.basename(os.path.abspath(training.output_dir)),
        "base_models": base_model_ids(model_args) + export.card_base_models,
        "datasets": export.card_datasets or [os.path.basename(d) for d in data_args.dataset],
        "license": export.license,
        "training": {
            "stage": ", ".join(f"{p}={m}" for p, m in stage.modes().items()),
            "learning_rate": training.learning_rate,
            "global batch": training.per_device_train_batch_size * training.world_size
            * training.gradient_accumulation_steps,
            "epochs": training.num_train_epochs, "steps": trainer.state.global_step,
            "scheduler": training.lr_scheduler_type, "warmup": training.warmup_steps,
            "final train loss": round(result.training_loss, 4),
            **({"lora r / alpha": f"{stage.lora_r} / {stage.lora_alpha}"} if peft_config else {}),
        },
    }
    trainer.save_model(training.output_dir)
    merged_dir = None
    if trainer.accelerator.is_main_process:
        from .card import write_card

        processor.save_pretrained(training.output_dir)
        write_card(training.output_dir, adapter=peft_config is not None, **card)
        if peft_config is None:  # a full model folder (a LoRA run's is an adapter; its merged/ is checked below)
            from videollava.hub_folder import complete_hub_folder

            complete_hub_folder(training.output_dir, processor=None)
        publish_dir = training.output_dir
        if peft_config is not None and export.merge_lora:
            merged_dir = os.path.join(training.output_dir, "merged")
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            save_folder(merged, processor, merged_dir, card)
            publish_dir = merged_dir
        if push:
            push_folder(publish_dir, repo_id, private=training.hub_private_repo)
    trainer.accelerator.wait_for_everyone()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"output_dir": training.output_dir, "merged_dir": merged_dir, "losses": losses,
            "trainable": trainable, "global_step": trainer.state.global_step, "trainer": trainer}


################
# CLI
################
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Hand every token to `TrlParser` (`--config PRESET.yaml` + any dataclass flag; `--help` lists them all)."""
    parser.add_argument("argv", nargs=argparse.REMAINDER,
                        help="--config PRESET.yaml and any --flag value of the stage / data / model / SFTConfig args")
    parser.prefix_chars = "\x00"  # treat `--flags` as plain tokens so they all reach TrlParser unchanged


def run(args: argparse.Namespace) -> int:
    return main(list(args.argv))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments (`--config` + overrides) and train; returns an exit code."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    data_args, model_args, stage, export, training = parse_args(argv)
    train(data_args, model_args, stage, export, training)
    return 0
