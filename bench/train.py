"""Training throughput: samples/s and peak memory at batch 8 of mixed media, ours vs TRL's stock VLM collator.

Run as:
    python bench/train.py [--steps 5] [--out bench/train.json]

For a tiny and a small random config, one run each: the collator (decode + render + mask) plus forward, backward and
an AdamW step (projector + LLM trainable). "ours" = `training.VideoLlavaCollator` over LLaVA-format rows;
"trl" = `trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling` with the same media inline in `messages`
(`assistant_only_loss=True`). Peak memory is the process max RSS on CPU (cumulative over the run, so later rows
include earlier ones) or `torch.cuda.max_memory_allocated` on GPU. Output: JSON with per-run numbers and ours/trl ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time

import torch


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration  # noqa: E402
from tests.tiny import tiny_config, tiny_tokenizer  # noqa: E402
from tests.training.fakes import write_llava_json  # noqa: E402
from training.collator import VideoLlavaCollator  # noqa: E402
from training.data import DataSource, load_training_data  # noqa: E402
from training.media import load_image, load_video  # noqa: E402
from training.stages import StageArguments, apply_stage  # noqa: E402


logger = logging.getLogger("bench.train")
BATCH = 8


def small_config():
    """~25M parameters: 4-layer towers of width 256 at 112 px, 4-layer LLM of width 512."""
    tower = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                 image_size=112, patch_size=14)
    from modeling_videollava import LanguageBindVideoLlavaConfig

    tiny = tiny_config()
    text = dict(tiny.text_config.to_dict(), hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048)
    return LanguageBindVideoLlavaConfig(image_config=dict(tower, num_frames=1),
                            video_config=dict(tower, num_frames=4, add_time_attn=True), text_config=text,
                            image_token_index=tiny.image_token_index, video_token_index=tiny.video_token_index)


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trl_rows(rows, num_frames):
    out = []
    for row in rows:
        images = [load_image(p) for p in row["images"]]
        videos = [load_video(p, num_frames) for p in row["videos"]]
        messages = []
        for m in row["messages"]:
            content = []
            for b in m["content"]:
                if b["type"] == "video":
                    content.append({"type": "video", "video": videos.pop(0)})
                elif b["type"] == "image":
                    content.append({"type": "image"})
                else:
                    content.append({"type": "text", "text": b["text"]})
            messages.append({"role": m["role"], "content": content})
        out.append({"messages": messages, "images": images})
    return out


def run(name: str, config, rows, collate, steps: int, device: str) -> dict:
    from processing import build_processor

    torch.manual_seed(0)
    model = LanguageBindVideoLlavaForConditionalGeneration(config).to(device)
    apply_stage(model, StageArguments(train_language_model="full"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    processor = build_processor(config, tiny_tokenizer())
    collator = collate(processor, config)
    batches = [rows[(i * BATCH) % len(rows):][:BATCH] for i in range(steps + 1)]
    for i, batch_rows in enumerate(batches):
        if i == 1:  # step 0 is warm-up
            start = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator(batch_rows).items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    elapsed = time.perf_counter() - start
    return {"samples_per_s": round(steps * BATCH / elapsed, 2), "peak_mem_mb": round(_peak_mb(device), 1),
            "loss": round(loss.item(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = tempfile.mkdtemp()
    write_llava_json(data, n=16)
    rows = list(load_training_data([DataSource(f"{data}/train.json", f"{data}/images", f"{data}/videos")]))
    rows = rows * 4
    report = {"device": device, "batch": BATCH, "steps": args.steps, "runs": {}}
    for name, config in (("tiny", tiny_config()), ("small", small_config())):
        frames = config.video_config.num_frames
        ours = run(name, config, rows, lambda p, c: VideoLlavaCollator(p, num_frames=frames), args.steps, device)
        entry = {"ours": ours}
        try:
            from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

            trl_rows = _trl_rows(rows, frames)

            def trl_collate(p, c):
                stock = DataCollatorForVisionLanguageModeling(p, assistant_only_loss=True)
                return lambda batch_rows: stock([dict(r) for r in batch_rows])

            trl = run(name, config, trl_rows, trl_collate, args.steps, device)
            entry["trl"] = trl
            entry["ratio_samples_per_s"] = round(ours["samples_per_s"] / trl["samples_per_s"], 3)
            entry["note"] = ("trl rows are pre-decoded (media decode not timed for trl); trl leaves <image>/<video> "
                             "masking to assistant_only_loss")
        except Exception as err:  # noqa: BLE001 -- report, don't crash the benchmark
            entry["trl"] = {"error": f"{type(err).__name__}: {err}"[:300]}
        report["runs"][name] = entry
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
