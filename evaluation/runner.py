"""Generation runner: model loading, batched greedy generation, resumable and sharded predictions.

The model-facing surface is two functions, `load_model_and_processor` and `generate_answers`; everything else
(resume, sharding, the run record) works with any object pair and a `generate_fn`, so it is tested without a model.

Layout of `--output DIR`:
    run_config.json            everything that affects a score (generation, prompt template, frames, dtype, revision)
    shards/predictions.rank*.jsonl   raw predictions as written, one file per process (appended, fsync'd per batch)
    predictions.jsonl          all raw predictions merged in dataset order
    judgements.jsonl           judge verdicts (video QA), metrics.json, report.md
"""

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .predictions import append_records, read_predictions, write_records
from .tasks import Sample


logger = logging.getLogger(__name__)
GenerateFn = Callable[[Any, Any, Sequence[Sample], "GenerationSettings"], list[str]]
# Keys of run_config.json that must match for a resumed run to append to earlier predictions.
RESUME_KEYS = ("task", "model", "revision", "dtype", "generation", "num_frames", "prompt", "data")


class GenerationError(RuntimeError):
    """A batch could not be answered (bad media, a model error); the message names its samples."""


@dataclass
class GenerationSettings:
    """Decoding settings; greedy by default (the original scripts' "temperature 0" sampling was the a6 bug)."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    num_beams: int = 1
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        kwargs["num_beams"] = self.num_beams
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:  # override any sampling defaults shipped in the checkpoint's generation_config.json
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


def load_model_and_processor(
    path: str, dtype: str = "bfloat16", revision: str | None = None, device: str | None = None, options: Any = None
) -> tuple[Any, Any]:
    """Load a model and its processor (local dir or Hub id), eval mode, left padding, through `videollava.loading`
    (placed while loading, never `.to()`-ed; `options`, a `LoadOptions`, adds 4-/8-bit and `device_map`). Folders of
    this package's model type load with our installed code (also folders that ship no code, like the embedded default
    model); anything else through its own Hub code (`trust_remote_code`)."""
    from videollava.loading import LoadOptions
    from videollava.loading import load_model_and_processor as load

    return load(path, options or LoadOptions(device=device or "auto", dtype=dtype, revision=revision))


def build_conversation(sample: Sample) -> list[dict[str, Any]]:
    """One user turn: media items first (as the original places `<image>`*8 before the text), then the prompt."""
    content: list[dict[str, Any]] = [{"type": kind, kind: value} for kind, value in sample.media]
    content.append({"type": "text", "text": sample.prompt})
    return [{"role": "user", "content": content}]


def generate_answers(model: Any, processor: Any, batch: Sequence[Sample], settings: GenerationSettings) -> list[str]:
    """Greedy (by default) generation for a batch of samples; returns the decoded new text per sample."""
    import torch

    inputs = processor.apply_chat_template(
        [build_conversation(s) for s in batch],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left"},
    )
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)) for k, v in inputs.items()}
    torch.manual_seed(settings.seed)
    with torch.inference_mode():
        out = model.generate(**inputs, **settings.generate_kwargs())
    new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, new)
    return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def describe_run(
    model: Any,
    processor: Any,
    task: str,
    model_path: str,
    data: str,
    settings: GenerationSettings,
    example: Sample | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The run record: every input that changes a score (with one fully rendered prompt), plus library versions."""
    import torch
    import transformers

    template = getattr(processor, "chat_template", None)
    config = getattr(model, "config", None)
    video_config = getattr(config, "video_config", None)
    num_frames = getattr(getattr(processor, "video_processor", None), "num_frames", None)
    params = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dtype = more.pop("dtype", None)
    rendered = None
    if example is not None and hasattr(processor, "apply_chat_template"):
        rendered = processor.apply_chat_template(build_conversation(example), add_generation_prompt=True, tokenize=False)
    return {
        "task": task,
        "model": model_path,
        "revision": more.pop("revision", None) or getattr(config, "_commit_hash", None),
        "dtype": str(params.dtype).removeprefix("torch.") if params is not None else dtype,
        "generation": asdict(settings),
        "num_frames": num_frames or getattr(video_config, "num_frames", None),
        "prompt": {
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
            "chat_template": template,
            "example": rendered,
        },
        "data": str(data),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        **more,
    }


def check_resume_compatible(output_dir: Path, run_config: Mapping[str, Any]) -> None:
    """Refuse to append predictions made with different settings to an existing output directory."""
    path = output_dir / "run_config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in RESUME_KEYS if k in run_config and old.get(k) != run_config.get(k)]
    if diff:
        raise ValueError(
            f"{path} was written with different {diff}; use a new --output directory (or --overwrite) so "
            "predictions made under different settings are never mixed"
        )


def finished_ids(output_dir: Path) -> set[str]:
    """Ids already predicted, from the merged file and every shard file (any world size)."""
    files = [output_dir / "predictions.jsonl", *sorted((output_dir / "shards").glob("*.jsonl"))]
    return {r["id"] for f in files if f.exists() for r in read_predictions(f)}


def prediction_record(sample: Sample, pred: str) -> dict[str, Any]:
    return {"id": sample.id, "question": sample.question or sample.prompt, "answer": sample.answer, "pred": pred,
            **sample.extra}  # fmt: skip


def run_generation(
    samples: Sequence[Sample],
    output_dir: str | os.PathLike,
    model: Any,
    processor: Any,
    settings: GenerationSettings,
    batch_size: int = 1,
    generate_fn: GenerateFn = generate_answers,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    prefix_cache: bool = False,
) -> int:
    """Generate predictions for this rank's share of `samples` that are not yet in `output_dir`.

    Per question (`prefix_cache=False`): sample i belongs to rank `i % world_size`, batches of `batch_size` go to
    `generate_fn`. With `prefix_cache`, the questions about the same media share one decoding, tower pass and prefix
    prefill (`evaluation.grouped`), ranks get contiguous runs of the media-grouped samples, and questions alone with
    their media still go to `generate_fn`. Each batch is appended and fsync'd to `shards/predictions.rank{rank}.jsonl`
    before the next one starts, so a killed run resumes where it stopped. Returns the number of samples generated now.
    """
    from .grouped import per_question_steps, plan_steps, shard_by_media  # imports torch: not at module import

    output_dir = Path(output_dir)
    shard = output_dir / "shards" / f"predictions.rank{rank}.jsonl"
    done = finished_ids(output_dir)
    mine = shard_by_media(samples, rank, world_size) if prefix_cache else samples[rank::world_size]
    todo = [s for s in mine if s.id not in done]
    if done:
        logger.info("resuming: %d predictions on disk, %d left for rank %d", len(done), len(todo), rank)
    if prefix_cache:
        steps = plan_steps(model, processor, todo, settings, batch_size, generate_fn)
    else:
        steps = per_question_steps(model, processor, todo, settings, batch_size, generate_fn)
    bar = tqdm(total=len(todo), desc=f"generate (rank {rank})", disable=not progress, position=rank)
    for step in steps:
        try:
            preds = step.run()
        except Exception as e:
            raise GenerationError(f"generation failed on samples {[s.id for s in step.samples]}: {e}") from e
        if len(preds) != len(step.samples):
            raise GenerationError(f"generate_fn returned {len(preds)} answers for {len(step.samples)} samples")
        append_records(shard, [prediction_record(s, p) for s, p in zip(step.samples, preds)])
        bar.update(len(step.samples))
    bar.close()
    return len(todo)


def merge_predictions(samples: Sequence[Sample], output_dir: str | os.PathLike) -> list[dict]:
    """Merge the merged file and all shards into `predictions.jsonl`, in dataset order (first record per id wins)."""
    output_dir = Path(output_dir)
    by_id: dict[str, dict] = {}
    files = [output_dir / "predictions.jsonl", *sorted((output_dir / "shards").glob("*.jsonl"))]
    for f in files:
        if f.exists():
            for rec in read_predictions(f):
                by_id.setdefault(rec["id"], rec)
    order = [s.id for s in samples]
    extra = sorted(set(by_id) - set(order))
    merged = [by_id[i] for i in order if i in by_id] + [by_id[i] for i in extra]
    write_records(output_dir / "predictions.jsonl", merged)
    return merged
