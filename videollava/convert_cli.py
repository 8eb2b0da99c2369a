"""`videollava convert`: the strict checkpoint converter of `modeling_videollava.convert`, plus the processor.

The converter itself writes weights, config, Hub code and tokenizer (and stays free of our other packages); this
command also saves the matching `LanguageBindVideoLlavaProcessor` (chat template, token counts, image size), so the output folder
loads with `AutoProcessor.from_pretrained(out, trust_remote_code=True)` as well as the model. The processor is written
into the converter's temporary folder, so the output appears complete or not at all.
"""

import argparse
import logging
from pathlib import Path

from modeling_videollava import convert as converter


logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    converter.add_arguments(parser)


def write_processor(folder: Path) -> None:
    """Save the processor matching the converted model and tokenizer in `folder`, then check that `folder` is a
    complete Hub folder (code files + auto_map, `videollava.hub_folder`)."""
    from .hub_folder import complete_hub_folder

    if not (folder / "tokenizer_config.json").is_file():
        logger.warning("No tokenizer in the output, so no processor was written: pass --tokenizer DIR.")
        complete_hub_folder(folder, processor=False)
        return
    from transformers import AutoTokenizer

    from modeling_videollava import LanguageBindVideoLlavaConfig
    from processing import build_processor

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    build_processor(LanguageBindVideoLlavaConfig.from_pretrained(folder), tokenizer).save_pretrained(folder)
    logger.info("Wrote the processor and chat template")
    complete_hub_folder(folder)


def run(args: argparse.Namespace) -> int:
    return converter.run(args, finish=None if args.to == "hf" else write_processor)
