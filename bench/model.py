"""Model benchmark: ours vs transformers' built-in VideoLlava on the same weights (temporal attention off), plus ours
with temporal attention on. Prefill latency, greedy generation tokens/s at batch 1 and 4, peak memory.

Each variant runs in its own process so peak memory is its own. Prints one JSON object with ratios (ours / built-in;
below 1 is faster / smaller).

Run as:
    python bench/model.py                       # CPU, "small" config (ViT-S-like towers at 224 px, 4-layer LLM)
    python bench/model.py --device cuda --size base --dtype bfloat16
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {
    "small": dict(tower=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
                  llm=dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8)),
    "base": dict(tower=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                 llm=dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=16, num_attention_heads=16)),
}
VARIANTS = ("builtin", "ours", "ours_temporal")


def build(variant: str, size: str, dtype: torch.dtype, device: str):
    from transformers import VideoLlavaConfig as HFConfig
    from transformers import VideoLlavaForConditionalGeneration as HFModel

    from modeling_videollava import LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration

    tower = dict(SIZES[size]["tower"], image_size=224, patch_size=14, hidden_act="gelu")
    llm = dict(SIZES[size]["llm"], model_type="llama", vocab_size=32064, max_position_embeddings=4096)
    torch.manual_seed(0)
    if variant == "builtin":
        config = HFConfig(vision_config=dict(tower, model_type="clip_vision_model"), text_config=llm)
        model = HFModel(config)
    else:
        config = LanguageBindVideoLlavaConfig(
            image_config=dict(tower, num_frames=1),
            video_config=dict(tower, num_frames=8, add_time_attn=variant == "ours_temporal"),
            text_config=llm,
        )
        model = LanguageBindVideoLlavaForConditionalGeneration(config)
    return model.to(device=device, dtype=dtype).eval(), config


def inputs(config, batch: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Each row: one 8-frame video (2056 placeholders) + 32 text tokens."""
    video_token = config.video_token_id if hasattr(config, "video_token_id") else config.video_token_index
    text = torch.randint(3, 32000, (batch, 32))
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, 2056), video_token), text], dim=1)
    return dict(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        pixel_values_videos=torch.randn(batch, 8, 3, 224, 224, device=device, dtype=dtype),
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def run_variant(args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    model, config = build(args.variant, args.size, dtype, args.device)
    result = {}
    with torch.inference_mode():
        for batch in (1, 4):
            feed = inputs(config, batch, args.device, dtype)
            result[f"prefill_s_b{batch}"] = timed(lambda: model(**feed, logits_to_keep=1), args.device, args.repeats)
            gen = timed(
                lambda: model.generate(**feed, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                       do_sample=False),
                args.device, args.repeats,
            )
            result[f"generate_tok_s_b{batch}"] = batch * args.new_tokens / gen
    if args.device.startswith("cuda"):
        result["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    ratios = {
        f"{name}/builtin": {k: results[name][k] / results["builtin"][k] for k in results["builtin"]}
        for name in ("ours", "ours_temporal")
    }
    print(json.dumps({"device": args.device, "dtype": args.dtype, "size": args.size, "results": results,
                      "ratios": ratios, "note": "tok_s ratio > 1 and prefill/memory ratio < 1 favour ours"}, indent=2))


if __name__ == "__main__":
    main()
