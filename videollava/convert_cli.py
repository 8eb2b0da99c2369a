"""`videollava convert`: the strict checkpoint converter of `modeling_videollava.convert`, plus the processor.

The converter itself writes weights, config, Hub code and tokenizer (and stays free of our other packages); this
command also saves the matching `LanguageBindVideoLlavaProcessor` (chat template, token counts, image size), so the output folder
loads with `AutoProcessor.from_pretrained(out, trust_remote_code=True)` as well as the model.
"""

import argparse
import logging
from pathlib import Path

from modeling_videollava import convert as converter


logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    converter.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    status = converter.run(args)
    if status or args.to == "hf":
        return status
    from .hub_folder import complete_hub_folder

    out = Path(args.output)
    if not (out / "tokenizer_config.json").is_file():
        logger.warning("No tokenizer in %s, so no processor was written: pass --tokenizer DIR.", out)
        complete_hub_folder(out, processor=False)
        return status
    from transformers import AutoTokenizer

    from modeling_videollava import LanguageBindVideoLlavaConfig
    from processing import build_processor

    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    build_processor(LanguageBindVideoLlavaConfig.from_pretrained(out), tokenizer).save_pretrained(out)
    logger.info("Wrote the processor and chat template to %s", out)
    complete_hub_folder(out)
    return status
