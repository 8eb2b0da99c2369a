"""`videollava` console entry point: one command, one subcommand per job.

Run as:
    videollava convert --from original --input DIR --output DIR
    videollava chat --video clip.mp4 "What happens?"
    videollava demo --port 7860
    videollava train --config training/configs/stage1.yaml
    videollava align --train data/stage1.json --heldout data/heldout_captions.json --tokenizer tok/ --output towers/
    videollava eval --task msvd --model DIR --data DIR --output DIR
    videollava serve --model DIR --host 127.0.0.1 --port 8000

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; modules are
imported only when their subcommand runs, so `videollava --help` stays fast.
"""

import argparse
import importlib
import logging
import sys


SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "chat": ("videollava.chat", "ask a model about images and videos: one answer, or an interactive session"),
    "demo": ("videollava.demo", "a Gradio web demo: chat about images and videos in the browser"),
    "convert": ("videollava.convert_cli", "convert a checkpoint between layouts (original, hf, languagebind)"),
    "align": ("videollava.align_cli", "pre-align image and video towers contrastively on captions (LanguageBind)"),
    "train": ("training.cli", "train a stage (projector / full / LoRA) with TRL's SFTTrainer"),
    "merge-lora": ("training.export", "merge a LoRA run's adapter into its base model and save (or push) it"),
    "eval": ("evaluation.cli", "generate, judge and score a benchmark; re-score predictions; render the report"),
    "serve": ("videollava.serve", "an OpenAI-compatible server (/v1/chat/completions, /v1/models) for one model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videollava", description="Video-LLaVA with LanguageBind towers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Global flags (-v) come before the subcommand; everything after it belongs to the subcommand.
    split = next((i + 1 for i, arg in enumerate(argv) if arg in SUBCOMMANDS), len(argv))
    head = parser.parse_args(argv[:split])
    if head.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if head.verbose else logging.INFO, format="%(levelname)s %(message)s")
    module = importlib.import_module(SUBCOMMANDS[head.command][0])
    sub = argparse.ArgumentParser(prog=f"videollava {head.command}", description=SUBCOMMANDS[head.command][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[split:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
