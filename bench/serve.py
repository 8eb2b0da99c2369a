"""Serving benchmark: `videollava serve` answering repeated questions about one clip, with the media cache (default)
vs without it (`--media-cache-mb 0`: every request decodes the clip and runs the video tower again).

Two real servers on 127.0.0.1 serve the same model; requests go over HTTP to one and the other in turn (A B, B A, ...
for `--rounds` rounds after one warm-up request each), so drift on a shared machine lands on both. Per request: the
wall time seen by the client and the video-tower forwards counted by the server (`GET /videollava/stats`). Answers
must be identical. Prints JSON with the median request time of each variant and the per-round ratio (median,
min, max).

The model is the bench "small" configuration (towers d384 x 12 layers at 224 px, 8 frames, temporal attention on;
4-layer d512 LLM; random weights, the embedded model's tokenizer), the clip a 10 s 640x360 H.264 file (GOP 250).

Run as:
    python bench/serve.py [--rounds 7] [--workdir /tmp/videollava_bench_serve] [--device cpu] [--output out.json]
    python bench/serve.py --model videollava/default_model          # any model folder instead
"""

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTION = "What is happening in this video?"


def build_small_model(out: Path) -> Path:
    """The bench "small" configuration with random weights, saved with the embedded model's tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch

    from modeling_videollava import LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration
    from processing import build_processor
    from videollava.loading import DEFAULT_MODEL, load_processor

    base = json.loads((DEFAULT_MODEL / "config.json").read_text())
    tower = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                 image_size=224, patch_size=14, hidden_act="gelu")
    base["image_config"].update(tower, num_frames=1)
    base["video_config"].update(tower, num_frames=8, add_time_attn=True)
    base["text_config"].update(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                               num_key_value_heads=8, head_dim=64, max_position_embeddings=4096)
    config = LanguageBindVideoLlavaConfig(**{k: v for k, v in base.items() if k not in ("architectures", "auto_map")})
    torch.manual_seed(0)
    model = LanguageBindVideoLlavaForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    build_processor(config, load_processor(str(DEFAULT_MODEL))[1].tokenizer).save_pretrained(out)
    return out


def make_clip(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("bench_decode", ROOT / "bench" / "decode.py")
    decode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decode)
    return decode.make_file(out, seconds=10, width=640, height=360, gop=250)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(model: str, flags: list[str], log: Path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "videollava.cli", "serve", "--model", model, "--port",
                                 str(port), *flags], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"videollava serve {flags} exited with {proc.returncode}; see {log}")
                try:
                    urllib.request.urlopen(f"{base}/v1/models", timeout=5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"videollava serve {flags} did not start; see {log}") from None
                    time.sleep(0.5)
            yield base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/videollava/stats", timeout=60) as response:
        return json.load(response)


def ask(base: str, model: str, url: str, max_tokens: int) -> tuple[float, int, str]:
    """One request: `(client wall seconds, video-tower forwards it cost, answer)`."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]}]}
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    before = _stats(base)["tower_calls"]["video"]
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.load(response)["choices"][0]["message"]["content"]
    seconds = time.perf_counter() - start
    return seconds, _stats(base)["tower_calls"]["video"] - before, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bench small configuration)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/videollava_bench_serve"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model or str(build_small_model(args.workdir / "small_model"))
    clip = str(make_clip(args.workdir / "clip_10s_360p.mp4"))
    loading = ["--device", args.device, "--dtype", args.dtype]
    variants = {"cache": loading, "no_cache": [*loading, "--media-cache-mb", "0"]}
    times: dict[str, list[float]] = {v: [] for v in variants}
    calls: dict[str, list[int]] = {v: [] for v in variants}
    answers: set[str] = set()
    with contextlib.ExitStack() as stack:
        bases = {v: stack.enter_context(serving(model, flags, args.workdir / f"{v}.log"))
                 for v, flags in variants.items()}
        first = {v: ask(base, model, clip, args.max_tokens) for v, base in bases.items()}  # warm-up; cache: a miss
        answers |= {a for _, _, a in first.values()}
        ratios = []
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            seconds = {}
            for v in order:
                seconds[v], n, answer = ask(bases[v], model, clip, args.max_tokens)
                times[v].append(seconds[v])
                calls[v].append(n)
                answers.add(answer)
            ratios.append(seconds["no_cache"] / seconds["cache"])
        data_url = "data:video/mp4;base64," + base64.b64encode(Path(clip).read_bytes()).decode()
        other_sources = [ask(bases["cache"], model, data_url, args.max_tokens)]
        answers |= {a for _, _, a in other_sources}
        cache_stats = _stats(bases["cache"])["media_cache"]
    result = {
        "model": "bench small (towers d384x12 @224 px, 8 frames, temporal on; LLM d512x4)" if args.model is None
        else args.model,
        "clip": "10 s 640x360 H.264, GOP 250", "device": args.device, "dtype": args.dtype, "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "first_request_s": {v: round(t, 3) for v, (t, _, _) in first.items()},
        "median_request_s": {v: round(statistics.median(t), 3) for v, t in times.items()},
        "spread_request_s": {v: [round(min(t), 3), round(max(t), 3)] for v, t in times.items()},
        "video_tower_calls_per_request": {v: sorted(set(c)) for v, c in calls.items()},
        "no_cache_over_cache": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                                "max": round(max(ratios), 2)},
        "data_url_request_on_cache_server": {"s": round(other_sources[0][0], 3),
                                             "video_tower_calls": other_sources[0][1]},
        "media_cache": cache_stats,
        "identical_answers": len(answers) == 1,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if len(answers) != 1:
        raise SystemExit(f"answers differ: {sorted(answers)}")


if __name__ == "__main__":
    main()
