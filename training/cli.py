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

from .arguments import DataArguments, ExportArguments, ModelArguments, parse_args
from .checkpoints import checkpoint_problem, checkpoint_step, newest_complete_checkpoint
from .collator import VideoLlavaCollator
from .data import DataFormatError, load_training_data
from .export import load_model, load_processor, push_folder, save_folder
from .media import MediaError, SkipLedger, SkippedMediaSummary
from .stages import StageArguments, apply_stage, log_trainable, lora_config, prepare_qlora
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
    if model_args.load_4bit:  # QLoRA
        from .stages import load_4bit_model

        return load_4bit_model(path, model_args.dtype, model_args.attn_implementation, trust_remote_code), path
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
    """`--resume_from_checkpoint` as given (checked); by default the newest *complete* `checkpoint-*` in
    `output_dir`, if any, saying which one and why any newer one was skipped."""
    value = training.resume_from_checkpoint
    if value is not None and str(value).lower() in ("none", "false", "no"):
        return None
    need_optimizer = not training.save_only_model
    if value not in (None, "", "auto", "last", "true", "True"):
        problem = checkpoint_problem(str(value), need_optimizer)
        if problem:
            raise ValueError(f"--resume_from_checkpoint {value}: cannot resume from it: {problem}")
        return value
    last, skipped = newest_complete_checkpoint(training.output_dir, need_optimizer)
    for line in skipped:
        logger.warning("not resuming from incomplete checkpoint %s", line)
    if last:
        newer = f"; skipped {len(skipped)} newer incomplete one(s), see above" if skipped else ""
        logger.info("resuming from %s (the newest complete checkpoint%s)", last, newer)
    elif skipped:
        logger.warning("no complete checkpoint in %s: training starts from the beginning", training.output_dir)
    return last


def final_logged_loss(log_history: list[dict[str, Any]]) -> str:
    """The last training loss in `Trainer`'s logged history (which a resumed run restores from its checkpoint)."""
    logged = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    if not logged:
        return "n/a (no loss was logged: lower --logging_steps)"
    step, loss = logged[-1]
    return f"{round(loss, 4)} (step {step})"


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
    if model_args.load_4bit:
        prepare_qlora(model, training.gradient_checkpointing, training.gradient_checkpointing_kwargs)
    trainable = apply_stage(model, stage)
    peft_config = lora_config(stage)

    ################
    # Dataset
    ################
    ledger = SkipLedger(training.output_dir, data_args.max_skipped_fraction, data_args.skip_min_seen)
    dataset = load_training_data(data_args.sources(), strict=data_args.strict, seed=training.seed, ledger=ledger)
    num_frames = data_args.num_frames or model.config.video_config.num_frames
    collator = VideoLlavaCollator(
        processor, num_frames=num_frames, max_length=training.max_length, strict=data_args.strict, ledger=ledger,
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
    resume = resume_checkpoint(training)
    start_step = checkpoint_step(resume) if resume else 0
    trainer.train(resume_from_checkpoint=resume)
    model.config.run_unused_towers = False
    # this process's draws against this process's skips (its DataLoader workers share its ledger's run id)
    ledger.check_run(drawn=(trainer.state.global_step - start_step) * training.per_device_train_batch_size
                     * training.gradient_accumulation_steps)

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
            "final train loss": final_logged_loss(trainer.state.log_history),
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
            if model_args.load_4bit:  # QLoRA: merge into the full-precision base, not into the 4-bit copy
                from .export import merge_lora

                merge_lora(training.output_dir, merged_dir, base=source, card_kwargs=card)
            else:
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
    try:
        train(data_args, model_args, stage, export, training)
    except (DataFormatError, MediaError) as err:  # bad data: one line, no traceback
        logger.error("%s", err)
        return 1
    return 0
