"""Quantized loading benchmark: full precision vs `--load-8bit` vs `--load-4bit` (bitsandbytes, LLM only) on the same
checkpoint. Per mode: the loaded weights' footprint, peak RSS (and its growth over the process after imports), load
time, time to first token of a shipped sample, and how many answers to the shipped sample questions equal full
precision's. On the 0.73 M-parameter default model the weights are ~3 MiB, so peak RSS is Python + torch (+ the
bitsandbytes import for the quantized modes); on a 7B the weights dominate.

Each run is its own process (so peak memory is its own), interleaved over rounds (fp32 8bit 4bit fp32 8bit 4bit ...)
so machine drift spreads over all modes; medians are reported with min/max. Prints one JSON object; ratios are
against full precision in the same run.

Run as:
    python bench/quantized.py                                   # the embedded default model, CPU, 3 rounds
    python bench/quantized.py --model converted/Video-LLaVA-7B --device cuda --rounds 1
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MODES = {"fp32": {}, "8bit": {"load_8bit": True}, "4bit": {"load_4bit": True}}


def child(mode: str, model_path: str | None, device: str) -> dict:
    import torch

    from videollava.engine import Engine, GenerationSettings
    from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR, LoadOptions, load_model, load_processor

    torch.set_num_threads(max(1, torch.get_num_threads()))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = model_path or str(DEFAULT_MODEL)
    start = time.perf_counter()
    config, processor = load_processor(path)
    model = load_model(path, config, options=LoadOptions(device=device, **MODES[mode]))
    load_s = time.perf_counter() - start
    weights_mib = model.get_memory_footprint() / 2**20  # parameters + buffers as loaded (4-bit: packed + scales)
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=16))
    samples = json.loads((SAMPLES_DIR / "samples.json").read_text())
    answers, first_token = [], None
    for sample in samples:
        kind = "video" if sample["file"].endswith(".mp4") else "image"
        medium = engine.load(kind, f"sample:{sample['file']}")
        for qa in sample["questions"]:
            conv = engine.conversation()
            answers.append(conv.answer(qa["question"], [medium]))
            if first_token is None:
                first_token = conv.last_stats.first_token_s  # includes decoding-free tower call + prefill
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"mode": mode, "weights_mib": weights_mib, "peak_rss_mib": peak, "rss_growth_mib": peak - base_rss, "load_s": load_s,
            "first_token_s": first_token, "answers": answers, "gpu_peak_mib": gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.device)))
        return
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:  # interleaved: A B C A B C ...
            cmd = [sys.executable, __file__, "--child", mode, "--device", args.device]
            out = subprocess.run(cmd + (["--model", args.model] if args.model else []), capture_output=True,
                                 text=True, check=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))

    def spread(mode: str, key: str) -> dict:
        values = [r[key] for r in runs[mode] if r[key] is not None]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)} if values else None

    reference = runs["fp32"][0]["answers"]
    result = {"model": args.model or "embedded default", "device": args.device, "rounds": args.rounds, "modes": {}}
    for mode in MODES:
        answers = runs[mode][0]["answers"]
        result["modes"][mode] = {
            "weights_mib": spread(mode, "weights_mib"), "peak_rss_mib": spread(mode, "peak_rss_mib"),
            "rss_growth_mib": spread(mode, "rss_growth_mib"),
            "load_s": spread(mode, "load_s"), "first_token_s": spread(mode, "first_token_s"),
            "gpu_peak_mib": spread(mode, "gpu_peak_mib"),
            "agreement_with_fp32": f"{sum(a == b for a, b in zip(answers, reference))} / {len(reference)}",
            "peak_rss_ratio_vs_fp32": round(spread(mode, "peak_rss_mib")["median"]
                                            / spread("fp32", "peak_rss_mib")["median"], 3),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
