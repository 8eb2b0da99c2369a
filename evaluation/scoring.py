"""Turn raw predictions into metrics for a task (with the judge for video QA) and write them next to the run."""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .judge import ChatJudge
from .predictions import write_json, write_records
from .tasks import SCORERS, Task, headline


logger = logging.getLogger(__name__)


def score_predictions(
    task: Task,
    records: Sequence[Mapping],
    judge: ChatJudge | None = None,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `records` (`{"id", "question", "answer", "pred", ...}`) with the task's rule.

    Video-QA tasks need `judge`; their verdicts are saved to `judgements.jsonl`. With `output_dir`, the result
    (metrics, headline numbers, judge identity) is also written to `metrics.json`.

    Raises:
        JudgeOutage: too few predictions got a verdict (see `JudgeConfig.min_judged_fraction`); the verdicts are
            still saved, `metrics.json` is not written.
    """
    if not records:
        raise ValueError(f"no predictions to score for task {task.name}")
    required = {"answers"} if task.kind == "vqa" else {"answer"}
    for rec in records:
        missing = required - set(rec)
        if missing:
            raise ValueError(f"task {task.name}: prediction {rec.get('id')} lacks {sorted(missing)}")
    result: dict[str, Any] = {"task": task.name}
    if task.kind == "video_qa":
        if judge is None:
            raise ValueError(f"task {task.name} is judged by an LLM: pass --judge-model/--judge-base-url")
        verdicts = judge.judge_many(records, progress=progress)
        metrics = SCORERS["video_qa"](verdicts)
        result["judge"] = judge.identity()
        if output_dir is not None:
            write_records(Path(output_dir) / "judgements.jsonl", verdicts)
        judge.require_enough(verdicts)
    else:
        metrics = SCORERS[task.kind](records)
    result["metrics"] = metrics
    result["headline"] = headline(task, metrics)
    if output_dir is not None:
        write_json(Path(output_dir) / "metrics.json", result)
    return result
