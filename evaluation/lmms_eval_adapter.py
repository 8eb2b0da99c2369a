"""lmms-eval model type `videollava_lb`: our model inside lmms-eval (0.7.3), without the old adapter's bugs (a7).

Honours the task's generation kwargs (`max_new_tokens`, not `max_length`; greedy unless `temperature > 0` or
`do_sample`; `until` stop strings), `dtype`, `batch_size` (an integer, or `auto` / `auto:N`: start at
`--max_batch_size` (default 8) and halve on out-of-memory, with accelerate's `find_executable_batch_size`), and
documents with several images and/or videos. Each process runs on its own device: `cuda:$LOCAL_RANK` (or CPU when
there is no CUDA); `rank` / `world_size` come from `RANK` / `WORLD_SIZE`.

lmms-eval logs any exception raised during an evaluation and still exits 0. A failure inside this adapter (loading
the model, generating) is therefore raised as `EvaluationAborted`, a `SystemExit`, which passes through lmms-eval's
`except Exception` so that the process exits non-zero with the reason (the traceback is logged first). Failures in
lmms-eval's own code (a task's data or metrics) stay exit 0 unless lmms-eval runs with `--verbosity DEBUG`, which
re-raises them.

lmms-eval finds the model through the `lmms_eval.models` entry point of this package, or through
`LMMS_EVAL_PLUGINS=evaluation.lmms_plugin` (which also adds our tasks, e.g. `videollava_samples`). Run as:
    LMMS_EVAL_PLUGINS=evaluation.lmms_plugin accelerate launch -m lmms_eval --model videollava_lb \
        --model_args pretrained=LanguageBind/Video-LLaVA-7B,dtype=bfloat16 --tasks mvbench --batch_size auto
"""

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from .runner import GenerationSettings, generate_answers
from .tasks import Sample


logger = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".flv", ".wmv", ".m4v")
_PLACEHOLDERS = ("<video>", "<image>")
DEFAULT_AUTO_BATCH = 8

try:  # lmms-eval is optional: without it the class still works (tests call it the way lmms-eval does)
    from lmms_eval.api.model import lmms as _Base
except ImportError:  # pragma: no cover - depends on the environment
    _Base = object


class EvaluationAborted(SystemExit):
    """Ends an lmms-eval run with a non-zero exit status: lmms-eval catches `Exception` and exits 0."""

    def __init__(self, message: str) -> None:
        super().__init__(f"videollava_lb: {message}")


def _media_item(visual: Any) -> tuple[str, Any]:
    if isinstance(visual, (str, os.PathLike)):
        path = os.fspath(visual)
        if path.lower().endswith(VIDEO_SUFFIXES):
            return ("video", path)
        from PIL import Image

        return ("image", Image.open(path).convert("RGB"))
    if hasattr(visual, "convert"):  # PIL image
        return ("image", visual.convert("RGB"))
    raise TypeError(f"unsupported visual of type {type(visual).__name__}: give a PIL image or a file path")


def settings_from_gen_kwargs(gen_kwargs: dict[str, Any], default_max_new_tokens: int = 128) -> GenerationSettings:
    """Map lmms-eval generation kwargs onto our settings; `max_new_tokens` (or `max_gen_toks`) bounds new tokens."""
    max_new = gen_kwargs.get("max_new_tokens", gen_kwargs.get("max_gen_toks", default_max_new_tokens))
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    do_sample = bool(gen_kwargs.get("do_sample", False)) or temperature > 0
    return GenerationSettings(
        max_new_tokens=int(max_new),
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=gen_kwargs.get("top_p") if do_sample else None,
        num_beams=int(gen_kwargs.get("num_beams") or 1),
    )


def parse_batch_size(batch_size: int | str, max_batch_size: int | None = None) -> tuple[int, bool]:
    """`--batch_size` -> (size to start with, whether to halve on out-of-memory): N, `auto` or `auto:N`."""
    text = str(batch_size).strip().lower()
    if text.startswith("auto"):
        start = text.partition(":")[2]
        if start and not start.isdigit():
            raise ValueError(f"batch_size {batch_size!r}: use N, auto or auto:N")
        size = int(start) if start else int(max_batch_size or DEFAULT_AUTO_BATCH)
        return size, True
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"batch_size {batch_size!r}: use a positive integer, auto or auto:N")
    return int(text), False


def resolve_device(device: str | None) -> str:
    """This process's device: `cuda:$LOCAL_RANK` when CUDA is there (also for a bare `cuda` with several
    processes), else CPU; an explicit `cpu` / `cuda:N` in a single process is kept."""
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    several = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if device in (None, "", "auto"):
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    parsed = torch.device(device)
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is available (use device=cpu)")
    if parsed.type == "cuda" and several:
        if parsed.index not in (None, local_rank):
            logger.warning("device %s ignored: with several processes each uses cuda:$LOCAL_RANK", device)
        return f"cuda:{local_rank}"
    return str(parsed)


def _truncate(text: str, until: Sequence[str] | str | None) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text


class VideoLlavaLB(_Base):
    """lmms-eval wrapper around `LanguageBindVideoLlavaForConditionalGeneration` + `LanguageBindVideoLlavaProcessor`.

    Args:
        pretrained: model directory or Hub id.
        revision: Hub revision.
        dtype: torch dtype name ("bfloat16", "float16", "float32", "auto").
        batch_size: requests per `generate` call: N, `auto` or `auto:N` (lmms-eval passes `--batch_size`).
        max_batch_size: where `auto` starts (lmms-eval passes `--max_batch_size`; default 8).
        device: torch device; default `cuda:$LOCAL_RANK`, or CPU without CUDA.
        model, processor: already-built objects (skip loading; used by tests and notebooks).
    """

    def __init__(
        self,
        pretrained: str = "LanguageBind/Video-LLaVA-7B",
        revision: str | None = None,
        dtype: str = "bfloat16",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        model: Any = None,
        processor: Any = None,
        **kwargs: Any,
    ) -> None:
        if _Base is not object:
            super().__init__()
        if kwargs:
            logger.warning("videollava_lb ignores unknown model_args %s", sorted(kwargs))
        try:
            self.batch_size_per_gpu, self.auto_batch = parse_batch_size(batch_size, max_batch_size)
            self._device = resolve_device(device) if model is None else str(getattr(model, "device", "cpu"))
            if model is None or processor is None:
                from .runner import load_model_and_processor

                model, processor = load_model_and_processor(pretrained, dtype, revision, self._device)
        except Exception as exc:  # noqa: BLE001 - lmms-eval would log it and exit 0
            logger.error("videollava_lb could not start", exc_info=True)
            raise EvaluationAborted(f"cannot load {pretrained!r}: {exc}") from exc
        self.model, self.processor = model, processor
        self.task_dict: dict = getattr(self, "task_dict", {})
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.batch_sizes: dict[str, int] = {}  # gen_kwargs -> the batch size used (recorded in lmms-eval's results)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> str:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def _sample(self, request: Any) -> Sample:
        context, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        visuals = [v for v in (visuals or []) if v is not None]
        text = context
        for placeholder in _PLACEHOLDERS:
            text = text.replace(placeholder, "")
        return Sample(id=f"{task}/{split}/{doc_id}", prompt=text.strip(), media=[_media_item(v) for v in visuals],
                      answer="")  # fmt: skip

    def _generate_group(self, requests: list[Any], indices: list[int], settings: GenerationSettings) -> dict[int, str]:
        """Answers for `indices`, `batch_size` at a time; with `auto`, halving the size on out-of-memory and going
        on from the first unanswered request."""
        done: dict[int, str] = {}

        def run(batch_size: int) -> None:
            self.batch_size_per_gpu = batch_size
            todo = [i for i in indices if i not in done]
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                texts = generate_answers(self.model, self.processor, [self._sample(requests[i]) for i in chunk],
                                         settings)  # fmt: skip
                done.update(zip(chunk, texts))

        if self.auto_batch:
            from accelerate.utils import find_executable_batch_size

            find_executable_batch_size(run, starting_batch_size=self.batch_size_per_gpu,
                                       reduce_batch_size_fn=lambda: self.batch_size_per_gpu // 2)()
        else:
            run(self.batch_size_per_gpu)
        return done

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Answer each request; requests with equal gen_kwargs are batched, results keep request order."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        answers: list[str] = [""] * len(requests)
        for key, indices in groups.items():
            gen_kwargs = json.loads(key)
            try:
                done = self._generate_group(requests, indices, settings_from_gen_kwargs(gen_kwargs))
            except Exception as exc:  # noqa: BLE001 - lmms-eval would log it and exit 0
                logger.error("videollava_lb failed while generating", exc_info=True)
                raise EvaluationAborted(f"generation failed: {type(exc).__name__}: {exc}") from exc
            self.batch_sizes[key] = self.batch_size_per_gpu
            for i, text in done.items():
                answers[i] = _truncate(text, gen_kwargs.get("until"))
        return answers

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise EvaluationAborted("supports generate_until tasks only (no loglikelihood yet)")

    def loglikelihood_rolling(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise EvaluationAborted("supports generate_until tasks only (no loglikelihood_rolling)")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise EvaluationAborted("does not implement multi-round generation")
