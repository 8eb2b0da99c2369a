"""Subprocess entry for the launch tests: `training.cli.main` when the saved folder has a processor, else the
same `train()` with `FakeProcessor` injected (the tiny model folder then holds only weights + tokenizer)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.training.fakes import FakeProcessor  # noqa: E402
from training.arguments import parse_args  # noqa: E402
from training.cli import main, train  # noqa: E402
from training.export import load_model  # noqa: E402


if __name__ == "__main__":
    argv = sys.argv[1:]
    model_dir = argv[argv.index("--model_name_or_path") + 1]
    if os.path.exists(os.path.join(model_dir, "processor_config.json")):
        sys.exit(main(argv))
    import logging

    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    model = load_model(model_dir, dtype="float32")
    train(*args, model=model, processor=FakeProcessor(model.config))
