"""Export: save a Hub custom-code folder (weights + code + processor + card), merge a LoRA run, push to the Hub.

Run as:
    videollava merge-lora OUT/stage2_lora OUT/stage2_merged [--push_to_hub --hub_model_id ORG/NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import torch


logger = logging.getLogger(__name__)


def load_model(path: str, dtype: str = "auto", attn_implementation: str | None = None, trust_remote_code: bool = True):
    """Load a Video-LLaVA folder or Hub id: our installed class when available, else Hub custom code."""
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration

        return LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(path, **kwargs)
    except ImportError:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)


def load_processor(path: str, trust_remote_code: bool = True):
    """The processor saved next to the weights: our installed class when available, else Hub custom code."""
    try:
        from processing import LanguageBindVideoLlavaProcessor, register_auto_classes
        from videollava.loading import register_our_classes

        register_auto_classes()  # so a later save_pretrained writes auto_map + the processor code
        register_our_classes()  # the image processor is our installed class, not the folder's copy of its code
        return LanguageBindVideoLlavaProcessor.from_pretrained(path)
    except ImportError:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)


def save_folder(model, processor, folder: str, card_kwargs: dict[str, Any] | None = None) -> str:
    """Write weights + custom code (`save_pretrained`), processor + chat template, and the model card; the result is
    checked to be a complete Hub folder (`videollava.hub_folder`)."""
    from videollava.hub_folder import complete_hub_folder

    from .card import write_card

    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    if card_kwargs is not None:
        write_card(folder, **card_kwargs)
    complete_hub_folder(folder, processor=None)
    return folder


def merge_lora(adapter_dir: str, output_dir: str, base: str | None = None, card_kwargs: dict[str, Any] | None = None):
    """Load `base` (default: the adapter's `base_model_name_or_path`), apply the adapter, merge, save; returns the model."""
    from peft import PeftModel

    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        base = base or json.load(f)["base_model_name_or_path"]
    logger.info("merging adapter %s into %s", adapter_dir, base)
    model = PeftModel.from_pretrained(load_model(base, dtype="float32"), adapter_dir).merge_and_unload()
    processor = load_processor(adapter_dir if os.path.exists(os.path.join(adapter_dir, "processor_config.json"))
                               else base)
    save_folder(model, processor, output_dir, card_kwargs)
    logger.info("merged model written to %s", output_dir)
    return model


def push_folder(folder: str, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Create `repo_id` if needed and upload `folder` (skipping checkpoints); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message="Upload Video-LLaVA (videollava train)",
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.jsonl", "merged/**"],
    )
    logger.info("pushed %s to https://huggingface.co/%s", folder, repo_id)
    return str(getattr(info, "commit_url", info))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter_dir", help="output folder of a LoRA run (adapter_config.json + processor)")
    parser.add_argument("output_dir", help="folder for the merged model")
    parser.add_argument("--base", help="base model (default: adapter_config.json's base_model_name_or_path)")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", help="ORG/NAME to push to")
    parser.add_argument("--private", action="store_true")


def run(args: argparse.Namespace) -> int:
    card = {"repo_id": args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
            "base_models": [args.base] if args.base else None, "training": {"merged_from": args.adapter_dir}}
    merge_lora(args.adapter_dir, args.output_dir, args.base, card)
    if args.push_to_hub:
        if not args.hub_model_id:
            raise SystemExit("--push_to_hub needs --hub_model_id ORG/NAME")
        push_folder(args.output_dir, args.hub_model_id, private=args.private)
    return 0
