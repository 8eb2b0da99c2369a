"""`videollava eval`: generate, judge and score one benchmark; re-score a predictions file; render the report.

Run as:
    videollava eval --task msvd_qa --model LanguageBind/Video-LLaVA-7B --data eval/MSVD_Zero_Shot_QA --output runs/msvd \
        --judge-model gpt-3.5-turbo            # key from $OPENAI_API_KEY
    accelerate launch --num_processes 8 -m videollava.cli eval --task pope --model DIR --data pope/ --output runs/pope
    videollava eval --task msvd_qa --predictions merge.jsonl --judge-base-url http://127.0.0.1:8000/v1 --judge-model M
        # a key for such an endpoint, if it needs one, from $JUDGE_API_KEY ($OPENAI_API_KEY goes to OpenAI only)
    videollava eval --report runs/msvd runs/pope
"""

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from videollava.loading import ChatError, add_loading_arguments, options_from_args

from . import runner
from .judge import ChatJudge, JudgeConfig, JudgeError
from .predictions import read_predictions, write_json
from .report import load_results, render_report
from .scoring import score_predictions
from .tasks import TASKS, Task, get_task


logger = logging.getLogger(__name__)


def _number(kind: type, low: float, inclusive: bool = True, high: float | None = None):
    """An argparse type: `kind(text)` within [low, high] (or (low, ...) when not `inclusive`)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value != value or (value < low if inclusive else value <= low) or (high is not None and value > high):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and <= {high}' if high is not None else ''}, "
                                             f"got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `eval` flags."""
    mode = parser.add_argument_group("what to do")
    mode.add_argument("--task", choices=sorted(TASKS), help="benchmark (see evaluation/tasks.py for data layouts)")
    mode.add_argument("--model", help="model directory or Hub id: generate, then score")
    mode.add_argument("--predictions", help="re-score this predictions jsonl (ours or the original repo's merge.jsonl)")
    mode.add_argument("--report", nargs="+", metavar="DIR", help="render the paper-layout table from output dirs")
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--data", help="benchmark directory (layout per task)")
    io.add_argument("--output", help="output directory (resumable: finished ids are skipped)")
    io.add_argument("--limit", type=int, help="only the first N samples")
    io.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --output")
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    gen = parser.add_argument_group("generation (greedy by default)")
    gen.add_argument("--batch-size", type=int, default=1)
    gen.add_argument("--no-prefix-cache", action="store_true",
                     help="answer every question alone: decode, encode and prefill its media again (by default the "
                     "questions about one video or image share that work and the prompt's KV cache up to the question)")
    gen.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32", "auto"])
    gen.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    gen.add_argument("--max-new-tokens", type=int, help="default: the original script's value for the task")
    gen.add_argument("--do-sample", action="store_true", help="sample instead of greedy (not reproducible)")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--num-beams", type=int, default=1)
    gen.add_argument("--seed", type=int, default=0)
    add_loading_arguments(parser, device=False, dtype=False)  # --load-4bit / --load-8bit / --device-map / --quantize
    judge = parser.add_argument_group("judge (video QA): any OpenAI-compatible chat-completions endpoint")
    judge.add_argument("--judge-base-url", default="https://api.openai.com/v1")
    judge.add_argument("--judge-model", default="gpt-3.5-turbo")
    judge.add_argument("--judge-api-key-env", help="environment variable with the key (default: OPENAI_API_KEY for "
                       "api.openai.com, JUDGE_API_KEY for any other endpoint)")  # fmt: skip
    judge.add_argument("--judge-temperature", type=float, default=0.0)
    judge.add_argument("--judge-concurrency", type=_number(int, 1), default=8)
    judge.add_argument("--judge-max-retries", type=_number(int, 0), default=5, help="retries per sample (>= 0)")
    judge.add_argument("--judge-timeout", type=_number(float, 0, inclusive=False), default=60.0,
                       help="seconds for a whole request, reply included (> 0)")  # fmt: skip
    judge.add_argument("--judge-min-judged", type=_number(float, 0, high=1), default=0.95, metavar="FRACTION",
                       help="fail when fewer than this fraction of the predictions got a verdict")  # fmt: skip
    judge.add_argument("--judge-cache", help="judgement cache jsonl (default: judge_cache.jsonl beside the outputs)")


def _make_judge(args: argparse.Namespace, task: Task, default_dir: Path) -> ChatJudge | None:
    if task.kind != "video_qa":
        return None
    cfg = JudgeConfig(
        base_url=args.judge_base_url,
        model=args.judge_model,
        api_key_env=args.judge_api_key_env,
        temperature=args.judge_temperature,
        concurrency=args.judge_concurrency,
        max_retries=args.judge_max_retries,
        timeout_s=args.judge_timeout,
        min_judged_fraction=args.judge_min_judged,
        cache_path=args.judge_cache or str(default_dir / "judge_cache.jsonl"),
    )
    return ChatJudge(cfg)


def _distributed() -> tuple[int, int, Any]:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, state


def _generate_and_score(args: argparse.Namespace, task: Task) -> dict[str, Any] | None:
    if not (args.data and args.output):
        raise SystemExit("--model needs --data and --output")
    out = Path(args.output)
    rank, world, state = _distributed()
    samples = task.loader(Path(args.data))
    if args.limit:
        samples = samples[: args.limit]
    if args.overwrite and rank == 0:
        shutil.rmtree(out / "shards", ignore_errors=True)
        (out / "predictions.jsonl").unlink(missing_ok=True)
    device = str(state.device) if state is not None else None
    try:
        options = options_from_args(args, device=device or "auto")
        model, processor = runner.load_model_and_processor(args.model, options=options)
    except ChatError as exc:
        raise SystemExit(f"error: {exc}") from exc
    settings = runner.GenerationSettings(
        max_new_tokens=args.max_new_tokens or task.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        num_beams=args.num_beams,
        seed=args.seed,
    )
    config = runner.describe_run(
        model, processor, task.name, args.model, args.data, settings, example=samples[0] if samples else None,
        revision=args.revision, limit=args.limit, world_size=world, batch_size=args.batch_size,
        prefix_cache=not args.no_prefix_cache,
    )  # fmt: skip
    runner.check_resume_compatible(out, config)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run_config.json", config)
    try:
        runner.run_generation(
            samples, out, model, processor, settings, args.batch_size, runner.generate_answers, rank, world,
            progress=not args.no_progress, prefix_cache=not args.no_prefix_cache,
        )  # fmt: skip
    except runner.GenerationError as exc:
        raise SystemExit(f"error: {exc}; finished predictions are kept in {out}, re-run the same command to resume")
    if state is not None:
        state.wait_for_everyone()
    if rank != 0:
        return None
    merged = runner.merge_predictions(samples, out)
    missing = len(samples) - len({r["id"] for r in merged} & {s.id for s in samples})
    if missing:
        raise RuntimeError(f"{missing} samples have no prediction in {out}; re-run the same command to resume")
    result = score_predictions(task, merged, _make_judge(args, task, out), out, progress=not args.no_progress)
    result["run_config"] = str(out / "run_config.json")
    write_json(out / "metrics.json", result)
    (out / "report.md").write_text(render_report([result]), encoding="utf-8")
    return result


def run(args: argparse.Namespace) -> int:
    """Dispatch to report / re-score / generate-and-score; prints the resulting JSON (or markdown) on stdout.
    A judge failure (fatal HTTP error, too few verdicts) is one line on stderr and exit status 1."""
    try:
        return _run(args)
    except JudgeError as err:
        logger.error("videollava eval: %s", err)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.report:
        text = render_report(load_results(args.report))
        if args.output:
            Path(args.output).mkdir(parents=True, exist_ok=True)
            (Path(args.output) / "report.md").write_text(text, encoding="utf-8")
        print(text)
        return 0
    if not args.task:
        raise SystemExit("--task is required (or --report)")
    task = get_task(args.task)
    if args.predictions:
        records = read_predictions(args.predictions)
        out = Path(args.output) if args.output else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
        judge = _make_judge(args, task, out or Path(args.predictions).parent)
        result = score_predictions(task, records, judge, out, progress=not args.no_progress)
        result["predictions"] = str(args.predictions)
    elif args.model:
        result = _generate_and_score(args, task)
        if result is None:
            return 0
    else:
        raise SystemExit("pass --model (generate and score) or --predictions (re-score)")
    print(json.dumps(result, indent=2, default=str))
    return 0
