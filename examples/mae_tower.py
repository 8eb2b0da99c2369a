"""MAE-pretrain the "separated" image tower of the united-vs-separated ablation on the synthetic shapes images.

Reads the training images of `stage1.json` (the `"image"` items of `synthetic_shapes.py`'s output; held-out images
are not used), trains a tower of the default model's size (`TOWER` of `train_default_model.py`) with
`training.mae.pretrain_mae` and writes a LanguageBind-layout folder for
`videollava convert --from languagebind --image-tower OUT/`.

Run as:
    python examples/synthetic_shapes.py --out /tmp/shapes_mae --seed 0 --num-train 2000 --num-heldout 200
    python examples/mae_tower.py --data /tmp/shapes_mae --out /tmp/mae_tower --steps 3000   # ~2 min on 2 CPU cores
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.mae import MaeConfig, pretrain_mae  # noqa: E402


# the default model's tower size (examples/train_default_model.py TOWER)
TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
         "image_size": 64, "patch_size": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic_shapes.py output folder")
    parser.add_argument("--out", type=Path, required=True, help="tower folder to write")
    parser.add_argument("--steps", type=int, default=MaeConfig.steps)
    parser.add_argument("--batch-size", type=int, default=MaeConfig.batch_size)
    parser.add_argument("--lr", type=float, default=MaeConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    items = json.loads((args.data / "stage1.json").read_text())
    paths = [args.data / item["image"] for item in items if "image" in item]
    print(f"{len(paths)} training images of {len(items)} items in {args.data / 'stage1.json'}")
    report = pretrain_mae(paths, TOWER, args.out,
                          MaeConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed))
    print(f"loss {report['loss_first']:.4f} -> {report['loss_last']:.4f} in {report['seconds']:.1f} s; {args.out}")


if __name__ == "__main__":
    main()
