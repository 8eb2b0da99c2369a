"""lmms-eval model type `videollava_lb`: our model inside lmms-eval, without the old adapter's bugs (a7).

Honours the task's generation kwargs (`max_new_tokens`, not `max_length`; greedy unless `temperature > 0` or
`do_sample`; `until` stop strings), `dtype`, `batch_size`, and documents with several images and/or videos.
lmms-eval is imported lazily: without it the class still works (tests call it the way lmms-eval does).

Run as:
    LMMS_EVAL_PLUGINS=evaluation.lmms_plugin accelerate launch -m lmms_eval --model videollava_lb \
        --model_args pretrained=LanguageBind/Video-LLaVA-7B,dtype=bfloat16 --tasks mvbench --batch_size 4
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

try:  # lmms-eval is optional
    from lmms_eval.api.model import lmms as _Base
    from lmms_eval.api.registry import register_model as _register
except ImportError:  # pragma: no cover - depends on the environment
    _Base, _register = object, None


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
        dtype: torch dtype name ("bfloat16", "float16", "float32").
        batch_size: requests per `generate` call (lmms-eval passes `--batch_size`).
        device: torch device; default cuda if available.
        model, processor: already-built objects (skip loading; used by tests and notebooks).
    """

    def __init__(
        self,
        pretrained: str = "LanguageBind/Video-LLaVA-7B",
        revision: str | None = None,
        dtype: str = "bfloat16",
        batch_size: int | str = 1,
        device: str | None = None,
        model: Any = None,
        processor: Any = None,
        **kwargs: Any,
    ) -> None:
        if _Base is not object:
            super().__init__()
        if kwargs:
            logger.warning("videollava_lb ignores unknown model_args %s", sorted(kwargs))
        if model is None or processor is None:
            from .runner import load_model_and_processor

            model, processor = load_model_and_processor(pretrained, dtype, revision, device)
        self.model, self.processor = model, processor
        self.batch_size_per_gpu = int(batch_size)
        self.task_dict: dict = getattr(self, "task_dict", {})
        self._rank, self._world_size = 0, 1

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

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

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Answer each request; requests with equal gen_kwargs are batched, results keep request order."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        answers: list[str] = [""] * len(requests)
        for key, indices in groups.items():
            gen_kwargs = json.loads(key)
            settings = settings_from_gen_kwargs(gen_kwargs)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                texts = generate_answers(self.model, self.processor, [self._sample(requests[i]) for i in chunk], settings)
                for i, text in zip(chunk, texts):
                    answers[i] = _truncate(text, gen_kwargs.get("until"))
        return answers

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("videollava_lb supports generate_until tasks only (no loglikelihood yet)")

    def loglikelihood_rolling(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("videollava_lb supports generate_until tasks only")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("videollava_lb does not implement multi-round generation")


if _register is not None:  # pragma: no cover - only with lmms-eval installed
    _register("videollava_lb")(VideoLlavaLB)
