"""Model benchmark: ours vs transformers' built-in VideoLlava on the same weights (temporal attention off), plus ours
with temporal attention on, plus that same model generating with transformers' `DynamicCache` instead of our default
`AppendCache` (`ours_temporal_dynamic_cache`: the cache before/after, see modeling_videollava/kv_cache.py). Prefill
latency, greedy decode tokens/s at batch 1 and 4 and their ratio (what batching buys), peak memory.

Timings run in one process with the variants interleaved (round r runs them in a rotated order, reversed every other
round), so drift on a shared machine lands on all of them; ratios are taken per round and reported as median with min
and max.
Each batch size runs one `generate`, split by a logits processor that records when each step's logits arrive:
prefill is the span from the call to the first step, decode tokens/s the tokens after it over the span from the first
to the last step, so the ~2,100-token video prefill, which grows with the batch like any compute-bound pass, does not
hide what batching buys. On a shared CPU pass `--threads` at most the free cores: torch's threads wait for each other
at every op, so one thread descheduled by another job stalls all of them (with 2 threads on 2 cores, one taken by
another job, batch-4 decode ran below batch 1).
`generate_tok_s` (N tokens over the whole `generate` call, prefill included) is kept for comparison with older runs.
Peak memory is measured in one child process per variant, so each is its own. Prints one JSON object.

Run as:
    python bench/model.py                       # CPU, "small" config (ViT-S-like towers at 224 px, 4-layer LLM)
    python bench/model.py --device cuda --size base --dtype bfloat16
"""

import argparse
import json
import resource
import statistics
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
VARIANTS = ("builtin", "ours", "ours_temporal", "ours_temporal_dynamic_cache")


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
            video_config=dict(tower, num_frames=8, add_time_attn=variant.startswith("ours_temporal")),
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


class StepClock:
    """A logits processor that only records when `generate` reaches each step: the first call comes right after
    the prefill, so the span from the first to the last call is the decoding of the remaining tokens alone, and the
    span from the `generate` call to the first is the prefill (synchronised first on CUDA)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sync(self.device)
        self.times.append(time.perf_counter())
        return scores


def cache_kwargs(variant: str, config) -> dict:
    """`generate` kwargs: a fresh `DynamicCache` for the `*_dynamic_cache` variant, else the model's default."""
    from transformers import DynamicCache

    return {"past_key_values": DynamicCache(config=config.text_config)} if variant.endswith("_dynamic_cache") else {}


def measure(
    variant: str, model, config, args: argparse.Namespace, dtype: torch.dtype, batches: tuple[int, ...] = (1, 4)
) -> dict[str, float]:
    """One round of every timing for one model: one `generate` per batch size, split at its first step into the
    prefill (`prefill_s`) and the decoding (`decode_tok_s`)."""
    from transformers import LogitsProcessorList

    result = {}
    with torch.inference_mode():
        for batch in batches:
            feed = inputs(config, batch, args.device, dtype)
            clock = StepClock(args.device)
            sync(args.device)
            start = time.perf_counter()
            model.generate(**feed, **cache_kwargs(variant, config), max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False,
                           logits_processor=LogitsProcessorList([clock]))
            sync(args.device)
            full = time.perf_counter() - start
            result[f"prefill_s_b{batch}"] = clock.times[0] - start
            result[f"decode_tok_s_b{batch}"] = batch * (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
            result[f"generate_tok_s_b{batch}"] = batch * args.new_tokens / full
    return result


def peak_memory(args: argparse.Namespace) -> dict:
    """In a child process: peak memory of one variant over a batch-4 generation (its prefill included)."""
    dtype = getattr(torch, args.dtype)
    model, config = build(args.variant, args.size, dtype, args.device)
    with torch.inference_mode():
        feed = inputs(config, 4, args.device, dtype)
        model.generate(**feed, **cache_kwargs(args.variant, config), max_new_tokens=args.new_tokens,
                       min_new_tokens=args.new_tokens, do_sample=False)
    if args.device.startswith("cuda"):
        return {"peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(peak_memory(args)))
        return
    memory = {}  # children first: a child forked from a parent holding the models would inherit its peak RSS
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        memory[variant] = json.loads(out.strip().splitlines()[-1])
    dtype = getattr(torch, args.dtype)
    models = {v: build(v, args.size, dtype, args.device) for v in VARIANTS if not v.endswith("_dynamic_cache")}
    models["ours_temporal_dynamic_cache"] = models["ours_temporal"]  # the same model, only the cache differs
    for variant, (model, config) in models.items():  # warm-up, not counted
        measure(variant, model, config, argparse.Namespace(**{**vars(args), "new_tokens": 3}), dtype, batches=(1,))
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        order = order[::-1] if r % 2 else order  # rotated, and reversed every other round: each pair swaps sides
        rounds.append({v: measure(v, *models[v], args, dtype) for v in order})
        print(json.dumps({"round": r, **rounds[-1]}), file=sys.stderr, flush=True)
    keys = list(rounds[0]["builtin"])
    results = {v: {k: statistics.median(rnd[v][k] for rnd in rounds) for k in keys} for v in VARIANTS}
    ratios = {f"{v}/builtin": {k: _summary([rnd[v][k] / rnd["builtin"][k] for rnd in rounds]) for k in keys}
              for v in VARIANTS[1:]}  # fmt: skip
    for num, den in (("ours_temporal", "ours"), ("ours_temporal", "ours_temporal_dynamic_cache")):
        ratios[f"{num}/{den}"] = {k: _summary([rnd[num][k] / rnd[den][k] for rnd in rounds]) for k in keys}
    batching = {v: _summary([rnd[v]["decode_tok_s_b4"] / rnd[v]["decode_tok_s_b1"] for rnd in rounds])
                for v in VARIANTS}  # fmt: skip
    for variant in VARIANTS:
        results[variant].update(memory[variant])
    report = {"device": args.device, "dtype": args.dtype, "size": args.size, "rounds": args.rounds,
              "threads": torch.get_num_threads(),
              "new_tokens": args.new_tokens, "results": results, "ratios": ratios,
              "decode_tok_s_b4_over_b1": batching,
              "note": "tok_s ratio > 1 and prefill/memory ratio < 1 favour the numerator"}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
