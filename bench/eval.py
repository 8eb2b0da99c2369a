"""Evaluation throughput: V videos x Q questions through `evaluation.runner.run_generation`, with the shared-prefix
cache (default: each video decoded, encoded and prefilled once, its questions batched on a copy of that KV cache) vs
`--no-prefix-cache` (every question decodes, encodes and prefills its video again).

Both variants run in one process, interleaved (A B, then B A, ... for `--rounds` rounds after one warm-up run of
each), so drift on a shared machine lands on both. Per Q: questions/s of each variant (median over rounds), the
per-round ratio (median, min, max), the peak resident memory above the process's level before the run (sampled
every 10 ms), and whether the answers of both variants are identical (they must be).

The model is the bench "small" configuration (towers d384 x 12 layers at 224 px, 8 frames, temporal attention on;
4-layer d512 LLM; random weights, the embedded model's tokenizer), each video a 10 s 640x360 H.264 file (GOP 250).

Run as:
    python bench/eval.py [--videos 2] [--questions 1 5 10] [--rounds 3] [--batch-size 4] [--output bench/eval.json]
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTIONS = [
    "What is happening in this video?", "What colour is the shape?", "Which way does the shape move?",
    "How many shapes are there?", "Is the background dark?", "Describe the video.", "Does the shape stop?",
    "Where does the shape end up?", "Is the shape a circle?", "Is anything moving?",
]


def _serve_bench():
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory while the block runs, above the level at its start (sampled every 10 ms)."""

    def __enter__(self):
        self.start, self.peak, self._stop = _rss(), _rss(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def above_start_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--questions", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "videollava_bench_eval")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if max(args.questions) > len(QUESTIONS):
        parser.error(f"--questions: at most {len(QUESTIONS)} per video")

    import torch

    from evaluation import runner
    from evaluation.tasks import Sample

    serve = _serve_bench()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = serve.build_small_model(args.workdir / "small_model")
    clip = serve.make_clip(args.workdir / "clip_10s_360p.mp4")
    videos = []
    for v in range(args.videos):  # distinct files: each is its own media group and is decoded on its own
        videos.append(args.workdir / f"video{v}.mp4")
        shutil.copyfile(clip, videos[-1])
    model, processor = runner.load_model_and_processor(str(model_dir), dtype="float32", device="cpu")
    settings = runner.GenerationSettings(max_new_tokens=args.max_new_tokens)

    def run(samples: list, prefix_cache: bool) -> tuple[float, float, dict]:
        out = Path(tempfile.mkdtemp(dir=args.workdir))
        with PeakRSS() as mem:
            start = time.perf_counter()
            runner.run_generation(samples, out, model, processor, settings, args.batch_size, runner.generate_answers,
                                  progress=False, prefix_cache=prefix_cache)  # fmt: skip
            seconds = time.perf_counter() - start
        preds = {r["id"]: r["pred"] for r in runner.merge_predictions(samples, out)}
        shutil.rmtree(out)
        return seconds, mem.above_start_mib, preds

    results = {}
    for q in args.questions:
        samples = [Sample(f"v{v}q{k}", QUESTIONS[k], [("video", str(path))], "")
                   for v, path in enumerate(videos) for k in range(q)]  # fmt: skip
        times: dict[str, list[float]] = {"prefix_cache": [], "no_prefix_cache": []}
        peaks: dict[str, float] = {"prefix_cache": 0.0, "no_prefix_cache": 0.0}
        answers: dict[str, dict] = {}
        for rnd in range(args.rounds + 1):  # round 0 warms up both and is not counted
            order = ["prefix_cache", "no_prefix_cache"] if rnd % 2 else ["no_prefix_cache", "prefix_cache"]
            for name in order:
                seconds, peak, preds = run(samples, prefix_cache=name == "prefix_cache")
                answers.setdefault(name, preds)
                if rnd:
                    times[name].append(seconds)
                    peaks[name] = max(peaks[name], peak)
        ratios = [b / a for a, b in zip(times["prefix_cache"], times["no_prefix_cache"])]
        results[f"Q={q}"] = {
            "questions": len(samples),
            "questions_per_s": {k: round(len(samples) / statistics.median(v), 3) for k, v in times.items()},
            "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "speedup": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                        "max": round(max(ratios), 2)},
            "peak_rss_above_start_mib": {k: round(v, 1) for k, v in peaks.items()},
            "identical_answers": answers["prefix_cache"] == answers["no_prefix_cache"],
        }
        print(json.dumps({f"Q={q}": results[f"Q={q}"]}), file=sys.stderr, flush=True)
    report = {
        "config": {"model": "bench small (towers d384 x 12 @ 224 px, 8 frames, temporal attention; 4-layer LLM)",
                   "videos": args.videos, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                   "rounds": args.rounds, "device": "cpu", "dtype": "float32", "threads": torch.get_num_threads()},
        "results": results,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if not all(r["identical_answers"] for r in results.values()):
        sys.exit("answers differ between the prefix-cache and per-question paths")


if __name__ == "__main__":
    main()
