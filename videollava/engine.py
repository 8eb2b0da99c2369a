"""The inference engine behind `videollava chat`, `videollava demo` and `videollava serve` (no command-line code here).

Public API:
    engine = Engine(model, processor, media_cache=MediaCache(512 * 2**20))
    clip = engine.load("video", "clip.mp4")                      # decoded once, keyed by content (`Medium`)
    conv = engine.conversation(system=None)                       # a `Conversation`
    for text in conv.ask("Which way does the shape move?", media=[clip]):
        ...                                                       # streamed pieces; `conv.turns[-1].answer` at the end
    conv.answer("And its colour?")                                # the same, returning the whole answer
    engine.answer_batch([(conv_a, "q1"), (conv_b, "q2", [image])])  # several conversations in one `generate`
    engine.media_cache.stats()                                    # hits / misses / evictions / bytes

A `Conversation` holds its turns (question, media, answer), the token ids rendered so far and the LLM's KV cache of
them. Each medium goes through its tower at most once per engine while `engine.media_cache` holds it (a bounded LRU
keyed by content, see `videollava.media`), and not at all when its tokens are already in the conversation's KV cache.
Each `ask` renders the whole history with the chat template (SPEC §6: Vicuna v1; a turn's media placeholders at the
start of that turn), keeps the longest prefix of the KV cache that matches both the tokens and the media behind
them, prefills the rest itself (token embeddings with the media features scattered in), and lets `generate` stream
the answer. Greedy unless `temperature` > 0. Problems a user can fix (a turn longer than the model's context, text
that is not UTF-8, a medium that does not decode) raise `ChatError` and leave the conversation as it was.

The engine serves this package's model type (`LanguageBindVideoLlavaForConditionalGeneration` and its processor).
One generation runs at a time per engine (`engine.lock`). Servers: `render_messages` -> ids, `prefill` -> KV cache.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .loading import ChatError
from .media import MediaCache, Medium, load_medium


logger = logging.getLogger(__name__)

_DONE = object()


@dataclass
class GenerationSettings:
    """Decoding settings of one answer: greedy when `temperature` is 0."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ChatError(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ChatError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ChatError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature > 0:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@dataclass
class Turn:
    question: str
    media: list[Medium] = field(default_factory=list)
    answer: str | None = None


@dataclass
class TurnStats:
    prompt_tokens: int
    prefilled_tokens: int
    new_tokens: int
    first_token_s: float
    total_s: float

    def describe(self, turn: int) -> str:
        return (f"turn {turn}: {self.prompt_tokens} prompt tokens, {self.prefilled_tokens} prefilled, "
                f"{self.new_tokens} new; first token {self.first_token_s:.3f} s, answer {self.total_s:.3f} s")


class _QueueStreamer:
    """A `generate` streamer: decoded text pieces go to a queue; notes when the first new token arrived."""

    def __init__(self, tokenizer, out: queue.Queue):
        from transformers import TextStreamer

        self.first_token_at: float | None = None
        self._prompt_seen = False
        self._text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._text.on_finalized_text = lambda text, stream_end=False: text and out.put(text)

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._prompt_seen = True
        self._text.put(value)

    def end(self) -> None:
        self._text.end()


def _check_text(text: str, what: str = "the question") -> str:
    """Refuse text that cannot be encoded as UTF-8 (lone surrogates from undecodable terminal bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start].encode("utf-8", "surrogateescape")
        raise ChatError(f"{what} is not valid UTF-8 text (byte {bad!r} at character {exc.start + 1})") from None
    return text


class Conversation:
    """One conversation: its turns, and the token ids + KV cache of everything rendered so far."""

    def __init__(self, engine: Engine, system: str | None = None):
        self.engine = engine
        self.system = system
        self.turns: list[Turn] = []
        self.last_stats: TurnStats | None = None
        self._cache: Any = None  # the LLM's KV cache of `_cached_ids[:cache length]`
        self._cached_ids: torch.Tensor | None = None
        self._cached_keys: list[str | None] = []  # content keys of the media behind the cached tokens, in order

    def messages(self, pending: Turn | None = None) -> list[dict]:
        """Chat-template messages of the history (plus a pending turn without an answer)."""
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        for turn in [*self.turns, *([pending] if pending else [])]:
            items = [{"type": m.kind, m.kind: m.source} for m in turn.media]
            content = [*items, {"type": "text", "text": turn.question}] if items else turn.question
            messages.append({"role": "user", "content": content})
            if turn.answer is not None:
                messages.append({"role": "assistant", "content": turn.answer})
        return messages

    def media(self) -> list[Medium]:
        return [m for turn in self.turns for m in turn.media]

    def truncate(self, n_turns: int) -> None:
        """Keep the first `n_turns` turns (retry / undo); the KV cache is cropped on the next `ask`."""
        self.turns = self.turns[:n_turns]

    def ask(self, question: str, media: Sequence[Medium] = (), settings: GenerationSettings | None = None,
            ) -> Iterator[str]:
        """Stream the answer to `question` (with new `media` for this turn) as text pieces; records the turn."""
        return self.engine._ask(self, Turn(question, list(media)), settings or self.engine.settings)

    def answer(self, question: str, media: Sequence[Medium] = (), settings: GenerationSettings | None = None) -> str:
        """`ask` without streaming: the whole answer."""
        for _ in self.ask(question, media, settings):
            pass
        return self.turns[-1].answer


class Engine:
    """A model + processor, a media cache and default generation settings; makes and runs `Conversation`s."""

    def __init__(self, model, processor, media_cache: MediaCache | None = None,
                 settings: GenerationSettings | None = None, num_frames: int | None = None):
        if not hasattr(model, "get_video_features") or not hasattr(processor, "frame_seq_length"):
            raise ChatError("the engine serves Video-LLaVA models of this package (model type "
                            "videollava_languagebind); convert others with `videollava convert`")
        self.model, self.processor = model, processor
        self.media_cache = media_cache if media_cache is not None else MediaCache()
        self.settings = settings or GenerationSettings()
        self.num_frames = num_frames
        self.lock = threading.Lock()
        self.tower_calls = {"image": 0, "video": 0}
        tokens = (processor.image_token, processor.video_token)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")")
        self._limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)

    ################
    # Media
    ################
    def load(self, kind: str, source: Any, num_frames: int | None = None) -> Medium:
        """Read an image or video (path, `sample:NAME`, `data:` / `http(s)://` URL, PIL image); not decoded while
        the media cache holds its features. Raises `ChatError` (`MediaError`) for a bad file."""
        return load_medium(self.processor, kind, source, num_frames or self.num_frames, self.media_cache)

    def conversation(self, system: str | None = None) -> Conversation:
        return Conversation(self, system)

    @torch.inference_mode()
    def features(self, medium: Medium) -> torch.Tensor:
        """Projected tower output `(L, D)` of one medium: from the media cache, or one tower call (then cached)."""
        cached = self.media_cache.get(medium.key)
        if cached is not None:
            return cached
        token = self.processor.image_token if medium.kind == "image" else self.processor.video_token
        inputs = self.processor(text=token, **{f"{medium.kind}s": [medium.decoded()]}, return_tensors="pt")
        if medium.kind == "image":
            features = self.model.get_image_features(inputs["pixel_values"])[0]  # (1, L, D) -> (L, D)
        else:
            features = self.model.get_video_features(inputs["pixel_values_videos"])[0]  # (1, T*n, D) -> (T*n, D)
        self.tower_calls[medium.kind] += 1
        self.media_cache.put(medium.key, features)
        return features

    def _span(self, medium: Medium) -> int:
        if medium.kind == "image":
            return self.processor.image_seq_length
        frames = medium.frames or len(getattr(data := medium.decoded(), "frames", data))
        return self.processor.frame_seq_length * frames

    ################
    # Prompts
    ################
    def _render(self, conv: Conversation, turn: Turn) -> tuple[torch.Tensor, list[Medium]]:
        """Token ids `(S,)` of the history + `turn` with every placeholder expanded, and the media in text order."""
        _check_text(turn.question)
        if self._split.search(turn.question):
            raise ChatError(f"the question contains a reserved placeholder ({self._split.pattern.strip('()')}); "
                            "attach media as files instead")
        return self.render_messages(conv.messages(turn), [*conv.media(), *turn.media])

    def render_messages(self, messages: list[dict], media: Sequence[Medium]) -> tuple[torch.Tensor, list[Medium]]:
        """Token ids `(S,)` of chat-template `messages` + generation prompt, the k-th image / video placeholder
        expanded for the k-th image / video of `media`, and `media` in text order. `ChatError`: mismatch, too long."""
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        queues = {"image": [m for m in media if m.kind == "image"], "video": [m for m in media if m.kind == "video"]}
        ordered, pieces = [], []
        for piece in self._split.split(prompt):
            kind = "image" if piece == self.processor.image_token else "video" if piece == self.processor.video_token \
                else None
            if kind is None:
                pieces.append(piece)
                continue
            if not queues[kind]:
                raise ChatError(f"the system prompt or a question contains a {piece} placeholder without a {kind}")
            medium = queues[kind].pop(0)
            ordered.append(medium)
            pieces.append(piece * self._span(medium))
        if any(queues.values()):
            raise ChatError(f"{sum(map(len, queues.values()))} of the media have no placeholder in the prompt")
        ids = self.processor.tokenizer("".join(pieces), return_tensors="pt")["input_ids"][0]
        if self._limit is not None and len(ids) >= self._limit:
            raise ChatError(f"the conversation would be {len(ids)} tokens and the model takes at most {self._limit};"
                            " ask something shorter or start a new conversation")
        return ids, ordered

    def _embed(self, ids: torch.Tensor, media: list[Medium], start: int = 0, end: int | None = None) -> torch.Tensor:
        """Embeddings `(1, end - start, D)` of `ids[start:end]`, media features at the media's tokens there."""
        end = len(ids) if end is None else end
        embedding = self.model.get_input_embeddings()
        embeds = embedding(ids[start:end][None].to(embedding.weight.device))
        position = self._visual_positions(ids)
        offset = 0
        for medium in media:
            span = position[offset: offset + self._span(medium)]
            offset += len(span)
            inside = span[(span >= start) & (span < end)]
            if len(inside):
                rows = self.features(medium)
                features = rows[(inside - span[0]).to(rows.device)]  # only the rows that fall in [start, end)
                embeds[0, (inside - start).to(embeds.device)] = features.to(embeds.device, embeds.dtype)
        return embeds

    def _visual_positions(self, ids: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        return torch.isin(ids, torch.tensor([config.image_token_id, config.video_token_id])).nonzero()[:, 0]

    def _reusable(self, conv: Conversation, ids: torch.Tensor, media: list[Medium]) -> int:
        """Crop the conversation's KV cache to the longest prefix matching `ids` and the media behind it."""
        if conv._cache is None or conv._cached_ids is None:
            return 0
        cached = conv._cached_ids[: conv._cache.get_seq_length()]
        n = min(len(cached), len(ids) - 1)
        keep = int((cached[:n] == ids[:n]).long().cumprod(0).sum())
        position, offset = self._visual_positions(ids), 0
        for i, medium in enumerate(media):
            if i >= len(conv._cached_keys) or medium.key is None or conv._cached_keys[i] != medium.key:
                keep = min(keep, int(position[offset]))  # another medium behind the same placeholder tokens
                break
            offset += self._span(medium)
        conv._cache.crop(keep - conv._cache.get_seq_length())  # negative: drop that many trailing tokens
        return keep

    ################
    # Generation
    ################
    def _stream(self, kwargs: dict[str, Any], stats: dict[str, Any]) -> Iterator[str]:
        """Run `generate` on a worker thread and yield its text as it comes; closing the iterator stops it."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        pieces: queue.Queue = queue.Queue()
        stop = threading.Event()
        streamer = _QueueStreamer(self.processor.tokenizer, pieces)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        def work() -> None:
            try:
                with torch.inference_mode():
                    stats["output"] = self.model.generate(**kwargs, streamer=streamer,
                                                          stopping_criteria=StoppingCriteriaList([_Stop()]))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                stats["error"] = exc
            finally:
                pieces.put(_DONE)

        worker = threading.Thread(target=work, name="videollava-generate", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not _DONE:
                yield piece
        finally:
            stop.set()
            worker.join()
            stats["first_token_at"] = streamer.first_token_at
        if "error" in stats:
            raise stats["error"]

    def _ask(self, conv: Conversation, turn: Turn, settings: GenerationSettings) -> Iterator[str]:
        with self.lock:
            ids, media = self._render(conv, turn)
            start = time.perf_counter()
            keep = self._reusable(conv, ids, media)
            done = False
            try:
                conv._cache = self.prefill(ids, media, conv._cache if keep else None, keep)
                device = self.model.get_input_embeddings().weight.device
                max_new = settings.max_new_tokens if self._limit is None else min(settings.max_new_tokens,
                                                                                  self._limit - len(ids))
                stats: dict[str, Any] = {}
                yield from self._stream(dict(
                    input_ids=ids[None].to(device), attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                              device=device),
                    past_key_values=conv._cache, max_new_tokens=max_new,
                    pad_token_id=self.processor.tokenizer.pad_token_id, **settings.generate_kwargs(),
                ), stats)
                done = True
            finally:
                if not done:  # interrupted or failed: the cache may hold a partial answer
                    conv._cache, conv._cached_ids, conv._cached_keys = None, None, []
            output = stats["output"][0].cpu()
            conv._cached_ids, conv._cached_keys = output, [m.key for m in media]
            new = output[len(ids):]
            turn.answer = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
            conv.turns.append(turn)
            total = time.perf_counter() - start
            first = (stats.get("first_token_at") or time.perf_counter()) - start
            conv.last_stats = TurnStats(len(ids), len(ids) - keep, len(new), first, total)

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, media: Sequence[Medium], cache: Any = None, start: int = 0) -> Any:
        """Run `ids[start:-1]` (media features from the media cache, else the towers) into `cache` (new when None, else
        holding `ids[:start]`) and return it; `generate(input_ids=ids[None], past_key_values=cache)` goes on."""
        from transformers import DynamicCache  # not kv_cache.AppendCache: with it `videollava serve` answered 500s

        cache = DynamicCache(config=self.model.config.get_text_config()) if cache is None else cache
        if start < len(ids) - 1:  # prefill all but the last token; `generate` takes that one
            embeds = self._embed(ids, list(media), start, len(ids) - 1)
            self.model(inputs_embeds=embeds, use_cache=True, past_key_values=cache, logits_to_keep=1,
                       attention_mask=torch.ones(1, len(ids) - 1, dtype=torch.long, device=embeds.device))
        return cache

    @torch.inference_mode()
    def answer_batch(self, requests: Sequence[tuple], settings: GenerationSettings | None = None) -> list[str]:
        """Answer `(conversation, question[, media])` requests in one left-padded `generate`; records each turn.

        Each row is prefilled from scratch (media features still come from the media cache); the conversations'
        own KV caches are left as they are and cropped by their next `ask`.
        """
        settings = settings or self.settings
        with self.lock:
            rows = []
            for conv, question, *rest in requests:
                turn = Turn(question, list(rest[0]) if rest else [])
                ids, media = self._render(conv, turn)
                rows.append((conv, turn, self._embed(ids, media)[0]))
            width = max(len(e) for _, _, e in rows)
            embedding = self.model.get_input_embeddings()
            pad_id = self.processor.tokenizer.pad_token_id
            pad = embedding(torch.tensor([pad_id], device=embedding.weight.device))[0]
            embeds = torch.stack([torch.cat([pad.expand(width - len(e), -1), e]) for _, _, e in rows])  # (B, S, D)
            mask = torch.stack([torch.arange(width) >= width - len(e) for _, _, e in rows]).long().to(embeds.device)
            budget = settings.max_new_tokens if self._limit is None else max(1, min(settings.max_new_tokens,
                                                                                    self._limit - width))
            output = self.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=budget,
                                         pad_token_id=pad_id, **settings.generate_kwargs()).cpu()
            answers = []
            for (conv, turn, _), new in zip(rows, output):
                turn.answer = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
                conv.turns.append(turn)
                answers.append(turn.answer)
            return answers


__all__ = ["Conversation", "Engine", "GenerationSettings", "Turn", "TurnStats"]
