"""The paper's two ablations at toy scale, on the default model's recipe (`default_model_recipe.py`), several seeds.

    joint_training  (Video-LLaVA Tab. 5)  stage 1+2 on video-only data vs joint image+video data
    alignment       (Video-LLaVA Fig. 5/6) united: the image tower aligned to the same text encoder as the video
                    tower, vs separated: an image tower of the same size pretrained by masked-patch reconstruction
                    (`training.mae`); the video tower is the same aligned one in both

Data (seed 0) and the towers (aligned, and the MAE tower) are made once and shared; each seed changes the LLM and
projector initialisation and the data order of both stages. The "joint" and "united" variants are the same
configuration (the default recipe), trained once per seed and reported in both tables. Every run is evaluated on the
held-out QA (video static / temporal, image); results go to `OUT/results.json` and the report to `docs/ablations.md`
(`ablations_report.py`). Finished runs are kept and reused when the command is repeated.

Run as:
    python examples/ablations.py --out out/ablations --seeds 0 1 2                   # both ablations
    python examples/ablations.py --out out/ablations --ablation joint_training --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

import default_model_recipe as recipe
import torch
from ablations_report import write_report
from shapes_accuracy import evaluate


# ablation -> (variant name, options, paper's role: "baseline" or "method"); options without seed and steps
ABLATIONS: dict[str, tuple[tuple[str, recipe.RecipeOptions, str], ...]] = {
    "joint_training": (
        ("video-only", recipe.RecipeOptions(media=("video",)), "baseline"),
        ("joint image+video", recipe.RecipeOptions(), "method"),
    ),
    "alignment": (
        ("separated (MAE image tower)", recipe.RecipeOptions(image_tower="mae"), "baseline"),
        ("united (aligned image tower)", recipe.RecipeOptions(), "method"),
    ),
}


def run_key(options: recipe.RecipeOptions) -> str:
    """Folder name of one configuration + seed: equal options share a run."""
    return (f"{'+'.join(options.media)}_{options.image_tower}_s{options.seed}"
            f"_steps{options.stage1_steps}-{options.stage2_steps}")


def run_one(data: Path, towers: Path, mae: Path, out: Path, options: recipe.RecipeOptions) -> dict:
    """Train and evaluate one configuration (or read its finished result)."""
    result_file = out / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    torch.set_num_threads(1)  # as the training stages: one thread per run, `--jobs` runs side by side
    start = time.perf_counter()
    times = recipe.run(data, towers, out, options, mae=mae, quiet=True)
    from videollava.chat import load_model, load_processor

    config, processor = load_processor(str(out / "stage2"))
    model = load_model(str(out / "stage2"), config, torch.device("cpu"), "float32")
    accuracy = evaluate(model, processor, data / "heldout.json")
    result = {"options": asdict(options), "seconds": {**times, "total": time.perf_counter() - start},
              "final_loss": {s: recipe.last_loss(out / f"{s}.log") for s in ("stage1", "stage2")},
              "accuracy": {k: accuracy[k] for k in ("static", "temporal", "all", "by_medium")}}
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/ablations"))
    parser.add_argument("--ablation", choices=[*ABLATIONS, "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stage1-steps", type=int, default=100, help="stage-1 max_steps (the default model: 300)")
    parser.add_argument("--stage2-steps", type=int, default=1000, help="stage-2 max_steps (the default model: 3000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (each on one CPU thread)")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-heldout", type=int, default=200)
    parser.add_argument("--report", type=Path, default=recipe.REPO / "docs" / "ablations.md")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error(f"--seeds: at least 3 seeds for mean +- std, got {len(args.seeds)}")
    out = args.out.resolve()
    data, towers, mae = out / "data", out / "towers", out / "mae_tower"
    if not (data / "heldout_captions.json").exists():
        recipe.make_data(data, 0, args.num_train, args.num_heldout)
    if not (towers / "report.json").exists():
        recipe.align(data, towers, seed=0)
    chosen = list(ABLATIONS) if args.ablation == "all" else [args.ablation]
    if any(o.image_tower == "mae" for name in chosen for _, o, _ in ABLATIONS[name]) and not (
            mae / "mae_report.json").exists():
        recipe.mae_tower(data, mae, seed=0)

    results: dict = {"settings": {"seeds": args.seeds, "stage1_steps": args.stage1_steps,
                                  "stage2_steps": args.stage2_steps, "num_train": args.num_train,
                                  "num_heldout": args.num_heldout,
                                  "towers": json.loads((towers / "report.json").read_text()),
                                  **({"mae": json.loads((mae / "mae_report.json").read_text())}
                                     if (mae / "mae_report.json").exists() else {})},
                     "ablations": {}}
    def run_options(options: recipe.RecipeOptions, seed: int) -> recipe.RecipeOptions:
        return replace(options, seed=seed, stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps)

    planned = {}  # run folder -> options; configurations shared by both ablations run once
    for name in chosen:
        for _, options, _ in ABLATIONS[name]:
            for seed in args.seeds:
                opts = run_options(options, seed)
                planned[run_key(opts)] = opts
    print(f"{len(planned)} runs, {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {key: pool.submit(run_one, data, towers, mae, out / "runs" / key, opts)
                   for key, opts in planned.items()}
        for key, future in futures.items():
            print(f"{key}: {json.dumps(future.result()['accuracy']['by_medium'])}", flush=True)
    for name in chosen:
        results["ablations"][name] = [
            {"variant": variant, "role": role,
             "runs": [futures[run_key(run_options(options, seed))].result() for seed in args.seeds]}
            for variant, options, role in ABLATIONS[name]
        ]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(write_report(results))
    print(f"wrote {out / 'results.json'} and {args.report}")


if __name__ == "__main__":
    main()
