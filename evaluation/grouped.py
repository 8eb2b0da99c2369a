"""Video-grouped evaluation: the questions about one medium share its decoding, its tower pass and the prefill of
the prompt up to the question (the KV cache of that prefix), instead of redoing all three per question.

`group_by_media` groups samples by their media; `shard_by_media` gives each rank a contiguous run of the
media-ordered samples, so a video's questions stay on one rank except where a run boundary falls inside a group.
`plan_steps` turns a rank's remaining samples into `Step`s, each one batch to answer and record (the runner appends
and fsyncs each step before the next, so a resume can split a video's questions anywhere):

* a group of two or more questions: the shared prefix (`evaluation.prefix`) is prefilled once, towers included, into
  a KV cache (`kv_cache.new_cache`); each batch of that group's suffixes continues from a copy of it repeated across the batch.
  Suffixes are left-padded *after* the prefix: row i is `prefix | pad x (W - L_i) | suffix_i`, the attention mask
  zero on the pads, and the position ids count only unmasked tokens (`cumsum(mask) - 1`), so every real token
  keeps the position and the keys it has in the per-question prompt and greedy answers are the same tokens.
* single questions (and groups that cannot share a prefix) are pooled into batches for the per-question
  `generate_fn`, so a task with one question per medium runs exactly as without the prefix cache.
"""

import copy
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .prefix import PrefixPlan, plan_prefix
from .tasks import Sample


logger = logging.getLogger(__name__)


@dataclass
class Step:
    """One batch of samples and how to answer it (`run()` returns one answer per sample)."""

    samples: list[Sample]
    run: Callable[[], list[str]]


def media_key(sample: Sample) -> tuple:
    """What a sample's media are: `(kind, path)` per item; in-memory images by a hash of their pixels."""
    key = []
    for kind, value in sample.media:
        if hasattr(value, "tobytes"):  # PIL image
            value = "pixels:" + hashlib.sha256(value.tobytes() + repr(value.size).encode()).hexdigest()
        key.append((kind, str(value)))
    return tuple(key)


def group_by_media(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Samples grouped by `media_key`, groups in order of first appearance, samples in dataset order."""
    groups: dict[tuple, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(media_key(sample), []).append(sample)
    return list(groups.values())


def shard_by_media(samples: Sequence[Sample], rank: int, world_size: int) -> list[Sample]:
    """Rank `rank`'s share: the `rank`-th of `world_size` near-equal contiguous runs of the samples ordered by media
    group. Every rank computes it from the whole task, so it is the same on a resume with any set of finished ids."""
    ordered = [s for group in group_by_media(samples) for s in group]
    n = len(ordered)
    return ordered[rank * n // world_size : (rank + 1) * n // world_size]


def supports_prefix_cache(model: Any, processor: Any, settings: Any) -> bool:
    """This package's model and processor, greedy or sampling without beams (beams expand the cache themselves)."""
    ours = hasattr(model, "get_video_features") and hasattr(processor, "frame_seq_length")
    return ours and getattr(settings, "num_beams", 1) == 1


class _Group:
    """A media group: its prefix plan and prefilled KV cache, made when its first batch runs (so only one group's
    media are decoded and held at a time) and dropped after its last batch."""

    def __init__(self, model: Any, processor: Any, samples: list[Sample], batches: int, generate_fn: Callable):
        self.model, self.processor, self.samples, self.generate_fn = model, processor, samples, generate_fn
        self.plan: PrefixPlan | None = None
        self.cache: Any = None
        self.planned = False
        self.left = batches

    @torch.inference_mode()
    def prefill(self, plan: PrefixPlan) -> Any:
        """The prefix's KV cache `(1, heads, P, head_dim)` per layer: one forward, towers included."""
        from modeling_videollava.kv_cache import new_cache

        model = self.model
        device = model.get_input_embeddings().weight.device
        dtype = next(model.parameters()).dtype
        cache = new_cache(model.config.get_text_config())  # in-place appends (kv_cache.py), copied per batch
        prefix = plan.prefix[None].to(device)  # (1, P)
        media = {k: v.to(device, dtype) for k, v in plan.media_inputs.items()}
        model(input_ids=prefix, attention_mask=torch.ones_like(prefix), past_key_values=cache, use_cache=True,
              logits_to_keep=1, **media)
        return cache

    def answer(self, indices: list[int], settings: Any) -> list[str]:
        """Answers to the group's questions `indices` (one batch), from the shared prefix cache when there is one."""
        if not self.planned:
            self.plan, self.planned = plan_prefix(self.processor, self.samples), True
            self.cache = self.prefill(self.plan) if self.plan is not None else None
        try:
            if self.plan is None:
                return self.generate_fn(self.model, self.processor, [self.samples[i] for i in indices], settings)
            return self._generate(indices, settings)
        finally:
            self.left -= 1
            if self.left == 0:
                self.plan = self.cache = None

    @torch.inference_mode()
    def _generate(self, indices: list[int], settings: Any) -> list[str]:
        plan, model = self.plan, self.model
        device = model.get_input_embeddings().weight.device
        suffixes = [plan.suffixes[i] for i in indices]
        lengths = torch.tensor([len(s) for s in suffixes])
        width, batch = int(lengths.max()), len(suffixes)
        pad_id = self.processor.tokenizer.pad_token_id
        prefix = plan.prefix[None].expand(batch, -1)  # (1, P) -> (B, P)
        padded = torch.stack([torch.cat([torch.full((width - len(s),), pad_id), s]) for s in suffixes])  # (B, W)
        input_ids = torch.cat([prefix, padded], dim=1).to(device)  # (B, P + W)
        real = torch.arange(width)[None] >= (width - lengths)[:, None]  # (B, W): False on the pads
        mask = torch.cat([torch.ones_like(prefix, dtype=torch.bool), real], dim=1).long().to(device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, P + W): real tokens count on from P
        cache = copy.deepcopy(self.cache)  # `generate` appends to it; the group's next batch needs the prefix only
        if batch > 1:
            cache.batch_repeat_interleave(batch)  # (1, heads, P, d) -> (B, heads, P, d) per layer
        torch.manual_seed(settings.seed)
        out = model.generate(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             **settings.generate_kwargs())
        new_tokens = out[:, input_ids.shape[1] :]  # (B, new)
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def per_question_steps(model: Any, processor: Any, samples: Sequence[Sample], settings: Any, batch_size: int,
                       generate_fn: Callable) -> list[Step]:
    """Batches of `batch_size` samples in order, each answered by `generate_fn` (today's per-question path)."""
    batches = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    return [Step(b, lambda b=b: generate_fn(model, processor, b, settings)) for b in batches]


def plan_steps(model: Any, processor: Any, samples: Sequence[Sample], settings: Any, batch_size: int,
               generate_fn: Callable) -> list[Step]:
    """Steps answering `samples`: prefix-cached batches per media group, pooled per-question batches otherwise."""
    steps: list[Step] = []
    singles: list[Sample] = []
    use_prefix = supports_prefix_cache(model, processor, settings)
    if not use_prefix:
        logger.info("prefix cache: not used (model type or beam search); answering question by question")
    for group in group_by_media(samples):
        if not use_prefix or len(group) == 1:
            singles.extend(group)
            continue
        chunks = [list(range(i, min(i + batch_size, len(group)))) for i in range(0, len(group), batch_size)]
        shared = _Group(model, processor, group, len(chunks), generate_fn)
        for chunk in chunks:
            steps.append(Step([group[i] for i in chunk], lambda c=chunk, g=shared: g.answer(c, settings)))
    return steps + per_question_steps(model, processor, singles, settings, batch_size, generate_fn)
