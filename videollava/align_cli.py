"""`videollava align`: LanguageBind-style contrastive pre-alignment of the image and video towers
(`training.alignment`), written as `LanguageBind_Image` / `LanguageBind_Video_merge` folders for `videollava convert
--from languagebind`.

Run as:
    videollava align --train data/stage1.json --heldout data/heldout_captions.json --tokenizer tok/ --output towers/
    videollava convert --from languagebind --image-tower towers/image --video-tower towers/video --input llm/ \\
        --output init/

Prints the report (held-out R@1 aligned vs random vs chance, losses, seconds) as JSON; a bad input exits 1 with one
line naming the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path


logger = logging.getLogger(__name__)

# The towers of the tiny default model (examples/train_default_model.py TOWER).
TOWER_DEFAULTS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                  "image_size": 64, "patch_size": 16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.alignment import AlignConfig

    parser.add_argument("--train", type=Path, required=True, help="stage-1 caption file with image and video items")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out caption file (heldout_captions.json)")
    parser.add_argument("--media-root", type=Path, help="folder the media paths are relative to (default: --train's)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer folder (the LLM's)")
    parser.add_argument("--output", type=Path, required=True, help="folder for image/, video/ and report.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: for these tiny models one thread beats two on 2 cores)")
    tower = parser.add_argument_group("towers (LanguageBindVisionConfig)")
    for name, value in TOWER_DEFAULTS.items():
        tower.add_argument(f"--tower-{name.replace('_', '-')}", dest=f"tower_{name}", type=int, default=value)
    align = parser.add_argument_group("alignment (AlignConfig)")
    for field in fields(AlignConfig):
        align.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=type(field.default),
                           default=field.default)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    from training.alignment import AlignConfig, align_towers
    from training.alignment_data import AlignmentDataError
    from training.media import MediaError

    for path in (args.train, args.heldout):
        if not path.is_file():
            logger.error("videollava align: %s: caption file not found", path)
            return 1
    if not (args.tokenizer / "tokenizer_config.json").is_file():
        logger.error("videollava align: %s: no tokenizer (tokenizer_config.json) in this folder", args.tokenizer)
        return 1
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if args.threads:
        torch.set_num_threads(args.threads)
    tower = {name: getattr(args, f"tower_{name}") for name in TOWER_DEFAULTS}
    try:
        config = AlignConfig(**{f.name: getattr(args, f.name) for f in fields(AlignConfig)})
    except ValueError as err:
        logger.error("videollava align: %s", err)
        return 1
    try:
        report = align_towers(args.train, args.heldout, args.media_root or args.train.parent, tokenizer, tower,
                              args.output, config)
    except (AlignmentDataError, MediaError) as err:
        logger.error("videollava align: %s", err)
        return 1
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0
