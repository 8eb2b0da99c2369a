"""The OpenAI-compatible app behind `videollava serve`: transformers' own serving stack with our loader plugged in.

transformers 5.23's `transformers serve` (`transformers/cli/serving/`) provides the FastAPI app (`build_server`),
model caching (`ModelManager`), request validation, generation on an inference thread and the OpenAI response and
server-sent-event formatting (`ChatCompletionHandler`). Used as is it cannot serve this model: it loads
`getattr(transformers, config.architectures[0])` instead of our classes, decodes audio from every video of a
"multimodal" model, asks the processor for 32 frames, and passes `data:` / `http(s)://` video URLs on as paths. Two
subclasses fix that, and nothing else is patched:

- `VideoLlavaModelManager` serves exactly one model, loaded by `videollava.loading` (our classes without
  `trust_remote_code`, others through the Auto classes); any other model name is a 404, `/v1/models` lists it.
- `VideoLlavaChatHandler.handle_request` (the stock one minus tools, continuous batching and audio) reads every
  content part itself: text, `image_url` and `video_url` as `data:` URL, `http(s)://` URL, local path or
  `sample:NAME`, several per message, through `videollava.media.load_medium` (videos sampled with the model's frame
  count, 8 for Video-LLaVA-7B); a part that cannot be read is an HTTP 400 naming it and the reason. The prompt is
  rendered and prefilled by `videollava.engine.Engine` (`render_messages`, `prefill`) — the code path of `videollava
  chat`, so answers are the same — with its media cache shared by all requests: the same clip (same bytes, whatever
  the source) is neither decoded nor sent through its tower again while the cache holds it. The stock
  `GenerateManager` then generates from that KV cache on its inference thread (plain JSON or server-sent events).
  `GET /videollava/stats` reports tower forwards and the cache's counters.

The overridden methods are private API of transformers 5.23 (`_load_model`, `_load_processor`, `_resolve_model`);
`check_transformers_version` refuses any other version, and tests/videollava/test_serve.py covers each hook.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.completion import CompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.response import ResponseHandler
from transformers.cli.serving.server import build_server
from transformers.cli.serving.systemone import SystemOneHandler
from transformers.cli.serving.transcription import TranscriptionHandler
from transformers.cli.serving.utils import GenerationState, Modality

from processing.video_sources import describe_source, load_image_source

from .chat import log_tower_calls
from .engine import Engine
from .loading import (ChatError, LoadOptions, count_quantized, first_line, load_model, load_processor,
                      resolve_sample)
from .media import MediaCache


logger = logging.getLogger(__name__)

PINNED_TRANSFORMERS = "5.23"
MEDIA_PART_TYPES = {"image_url": "image", "video_url": "video"}
_REASON_CHARS = 300  # a reason longer than this is cut (library messages can embed their input)


class ServeError(Exception):
    """A problem the user can fix before the server starts; printed as one line, exit status 1."""


def check_transformers_version(version: str = transformers.__version__) -> None:
    """The hooks below subclass private parts of `transformers serve`; they are written for 5.23 only."""
    if not version.startswith(PINNED_TRANSFORMERS + "."):
        raise ServeError(f"videollava serve hooks transformers {PINNED_TRANSFORMERS}'s serving classes; transformers "
                         f"{version} is installed (pip install 'transformers>={PINNED_TRANSFORMERS},<5.24')")


class RequestError(Exception):
    """A request the client must fix: answered with `status` and an OpenAI-style error body (see `error_body`)."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def error_body(self) -> dict:
        """OpenAI clients read `error.message`; FastAPI clients (and transformers' own errors) read `detail`."""
        code = "model_not_found" if self.status == 404 else "invalid_request"
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param,
                          "code": code}, "detail": self.message}


def _http_error(status: int, detail: str, param: str | None = None) -> RequestError:
    return RequestError(status, detail, param)


@dataclass
class ServedModel:
    """What `videollava serve` serves: one model under one name, loaded with `options`."""

    name: str  # the id clients send as `model` and `/v1/models` lists
    path: str  # folder or Hub id given to the loader
    options: LoadOptions = field(default_factory=LoadOptions)  # device / dtype / device map / 4- or 8-bit
    aliases: set[str] = field(default_factory=set)  # other ids accepted for it (the path as given, resolved)

    def accepts(self, requested: str | None) -> bool:
        return requested is None or requested == self.name or requested in self.aliases


class VideoLlavaModelManager(ModelManager):
    """transformers' `ModelManager` pinned to one model that our loader loads (at start-up, never unloaded)."""

    def __init__(self, served: ServedModel):
        self.served = served
        self.config = None
        self.created = int(time.time())
        super().__init__(device="cpu", dtype="auto", model_timeout=-1, force_model=served.name)

    def load_model_and_processor(self, model_id_and_revision: str, *args, **kwargs):
        if model_id_and_revision != self.process_model_name(self.served.name):
            raise _http_error(404, f"model {model_id_and_revision.rsplit('@', 1)[0]!r} is not served here "
                                   f"(this server serves {self.served.name!r}; see GET /v1/models)", "model")
        return super().load_model_and_processor(model_id_and_revision, *args, **kwargs)

    def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
        self.config, processor = load_processor(self.served.path, self.served.options.trust_remote_code)
        return processor

    def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None, gguf_file=None):
        if self.config is None:
            self.config, _ = load_processor(self.served.path, self.served.options.trust_remote_code)
        return load_model(self.served.path, self.config, options=self.served.options)

    def get_gen_models(self, cache_dir: str | None = None) -> list[dict]:
        return [{"id": self.served.name, "object": "model", "created": self.created, "owned_by": "videollava"}]

    @staticmethod
    def get_model_modality(model, processor=None) -> Modality:
        # VLM, never MULTIMODAL: that one makes transformers decode an audio track from every video
        from transformers import PreTrainedTokenizerBase

        return Modality.LLM if isinstance(processor, PreTrainedTokenizerBase) else Modality.VLM

    def model_and_processor(self):
        return self.load_model_and_processor(self.process_model_name(self.served.name))


def default_media_loader(processor) -> Callable[[str, str], Any]:
    """`load(kind, source)` for models of other types: a PIL image, or the video's source for their processor."""

    def load(kind: str, source: str) -> Any:
        source = resolve_sample(source)
        return load_image_source(source) if kind == "image" else source

    return load


class VideoLlavaChatHandler(ChatCompletionHandler):
    """`/v1/chat/completions` for the served model: content parts read and the prompt prefilled by our engine,
    generation by transformers' `GenerateManager`.

    Args:
        model_manager: the `VideoLlavaModelManager` of the served model.
        generation_state: transformers' `GenerationState` (one inference thread per model).
        max_new_tokens: answer length when the request gives no `max_tokens` / `max_completion_tokens`.
        media_cache: the engine's `MediaCache`, shared by all requests (default: 512 MiB).
    """

    def __init__(self, model_manager: VideoLlavaModelManager, generation_state: GenerationState,
                 max_new_tokens: int = 256, media_cache: MediaCache | None = None):
        super().__init__(model_manager, generation_state)
        self.max_new_tokens = max_new_tokens
        model, processor = model_manager.model_and_processor()
        self.tower_calls = log_tower_calls(model)  # forward hooks on the towers: what really ran
        self.quantized_layers = count_quantized(model)
        try:
            self.engine: Engine | None = Engine(model, processor, media_cache)
        except ChatError:  # another model type: its own processor reads the media, nothing is cached
            self.engine = None
            self._load_other = default_media_loader(processor)

    def _resolve_model(self, body: dict):
        served = self.model_manager.served
        if not served.accepts(body.get("model")):
            raise _http_error(404, f"model {body.get('model')!r} is not served here (this server serves "
                                   f"{served.name!r}; see GET /v1/models)", "model")
        body["model"] = served.name
        return super()._resolve_model(body)

    def get_processor_inputs_from_messages(self, messages: Any, modality: Modality = Modality.VLM) -> list[dict]:
        """OpenAI messages -> chat-template messages whose media parts hold a `Medium` (ours) or decoded media;
        a bad part raises HTTP 400 naming it."""
        if not isinstance(messages, list) or not messages:
            raise _http_error(400, "`messages` must be a non-empty list of chat messages", "messages")
        converted = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _http_error(400, f"messages[{i}]: expected an object with a `role` and a `content`")
            content = message.get("content")
            if content is None or isinstance(content, str):
                converted.append({"role": message["role"], "content": content or ""})
                continue
            if not isinstance(content, list):
                raise _http_error(400, f"messages[{i}].content: expected a string or a list of content parts")
            parts = [self._content_part(part, f"messages[{i}].content[{j}]", message["role"])
                     for j, part in enumerate(content)]
            converted.append({"role": message["role"], "content": parts})
        return converted

    def _content_part(self, part: Any, where: str, role: str) -> dict:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            if not isinstance(part.get("text"), str):
                raise _http_error(400, f"{where} (text): `text` must be a string", where)
            return {"type": "text", "text": part["text"]}
        if kind not in MEDIA_PART_TYPES:
            raise _http_error(400, f"{where}: content part type {kind!r} is not supported "
                                   "(use text, image_url or video_url)", where)
        media = MEDIA_PART_TYPES[kind]
        url = part.get(kind)
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url:
            raise _http_error(400, f"{where} ({kind}): give the {media} as {{\"url\": ...}} (data:, http(s):// "
                                   "or a path)", where)
        if role != "user":
            raise _http_error(400, f"{where} ({kind}): media are read from user messages only, not {role!r}", where)
        try:
            data = self.engine.load(media, url) if self.engine is not None else self._load_other(media, url)
        except (ValueError, OSError, ChatError) as err:
            reason = getattr(err, "reason", None) or first_line(err)
            reason = reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS] + "..."
            raise _http_error(400, f"{where} ({kind}) {describe_source(url)}: cannot read the {media}: "
                                   f"{reason}", where) from None
        return {"type": media, media: data}

    def _render(self, body: dict) -> tuple[torch.Tensor, list]:
        """Messages -> prompt token ids and the media in text order (off the event loop: media may be downloaded)."""
        messages = self.get_processor_inputs_from_messages(body.get("messages"), Modality.VLM)
        media = [p[p["type"]] for m in messages if isinstance(m["content"], list) for p in m["content"]
                 if p["type"] != "text"]
        for m in messages:  # the template only needs each part's type
            if isinstance(m["content"], list):
                m["content"] = [p if p["type"] == "text" else {"type": p["type"], p["type"]: p[p["type"]].source}
                                for p in m["content"]]
        try:
            return self.engine.render_messages(messages, media)
        except (ChatError, ValueError) as err:  # placeholders typed as text, a prompt that fills the context
            raise _http_error(400, f"messages: {first_line(err)}", "messages") from None

    def _prefill(self, ids: torch.Tensor, media: list, request_id: str) -> dict:
        """On the inference thread: the KV cache of the prompt (media from the cache or the towers) -> the inputs
        `generate` continues from."""
        calls, start = sum(self.tower_calls.values()), time.perf_counter()
        cache = self.engine.prefill(ids, media)
        device = self.engine.model.get_input_embeddings().weight.device
        logger.info("request %s: %d prompt tokens, %d media (%d tower calls), prefill %.3f s", request_id, len(ids),
                    len(media), sum(self.tower_calls.values()) - calls, time.perf_counter() - start)
        return {"input_ids": ids[None].to(device), "past_key_values": cache,
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device)}

    def _prepare_other(self, body: dict, model, processor) -> dict:
        """Another model type: its processor tokenizes and preprocesses, its forward runs the towers."""
        messages = self.get_processor_inputs_from_messages(body.get("messages"), Modality.VLM)
        try:
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt")
        except ValueError as err:  # e.g. media placeholders that do not match the media
            raise _http_error(400, f"messages: {first_line(err)}", "messages") from None
        return inputs.to(model.device)

    async def handle_request(self, body: dict, request_id: str):
        """The stock handler's steps for one VLM request: validate, resolve the model (404), read the content
        parts (400), render and prefill, build the generation config, then stream (SSE) or answer (JSON)."""
        self._validate_request(body)
        model_id, model, processor = self._resolve_model(body)
        gen_manager = self.generation_state.get_manager(model_id, use_cb=False)
        if self.engine is None:
            inputs = await asyncio.to_thread(self._prepare_other, body, model, processor)
        else:
            ids, media = await asyncio.to_thread(self._render, body)
            inputs = await gen_manager.async_submit(self._prefill, ids, media, request_id)
        asked = any(body.get(k) is not None for k in ("max_tokens", "max_completion_tokens", "generation_config"))
        gen_config = self._build_generation_config(body, model.generation_config)
        if not asked:
            gen_config.max_new_tokens = self.max_new_tokens
        limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        length = inputs["input_ids"].shape[-1]
        if limit is not None and length >= limit:
            raise _http_error(400, f"messages: the prompt is {length} tokens, the model takes at most {limit}",
                              "messages")
        if limit is not None and gen_config.max_new_tokens is not None:
            gen_config.max_new_tokens = min(gen_config.max_new_tokens, limit - length)
        name = self.model_manager.served.name  # answers carry the served name, not transformers' `name@main` key
        if body.get("stream"):
            return self._streaming(request_id, model, processor, name, inputs, gen_config, gen_manager)
        return await self._non_streaming(request_id, model, processor, name, inputs, gen_config, gen_manager)

    def stats(self) -> dict:
        """`GET /videollava/stats`: tower forwards since start-up, the media cache's counters, bitsandbytes layers
        per part of the model (`videollava.loading.count_quantized`)."""
        cache = self.engine.media_cache.stats() if self.engine is not None else None
        return {"model": self.model_manager.served.name, "tower_calls": dict(self.tower_calls), "media_cache": cache,
                "quantized_layers": self.quantized_layers}


def build_app(served: ServedModel, max_new_tokens: int = 256, media_cache: MediaCache | None = None,
              enable_cors: bool = False) -> tuple[Any, VideoLlavaModelManager]:
    """The FastAPI app (`transformers`' `build_server`) serving `served`; loads the model before returning.

    Returns:
        `(app, model_manager)`.
    """
    check_transformers_version()
    manager = VideoLlavaModelManager(served)
    state = GenerationState()
    chat = VideoLlavaChatHandler(manager, state, max_new_tokens, media_cache)
    app = build_server(
        manager,
        chat,
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
        generation_state=state,
        enable_cors=enable_cors,
    )

    async def request_error(_request, exc: RequestError):
        from fastapi.responses import JSONResponse

        return JSONResponse(exc.error_body(), status_code=exc.status)

    app.add_exception_handler(RequestError, request_error)
    app.add_api_route("/videollava/stats", chat.stats, methods=["GET"])
    return app, manager


def served_model(model: str | None, default_path: Path, options: LoadOptions | None = None,
                 name: str | None = None) -> ServedModel:
    """The served model: named `--model-name`, else `--model` as given, else `videollava/default_model`."""
    path = model or str(default_path)
    if model is None and not (default_path / "config.json").is_file():
        raise ServeError(f"the embedded model is missing from this install ({default_path}); pass --model")
    aliases = {path}
    if Path(path).exists():
        aliases.add(str(Path(path).resolve()))
    if model is not None:
        aliases.add(model)
    return ServedModel(name or model or "videollava/default_model", path, options or LoadOptions(), aliases)


__all__ = ["PINNED_TRANSFORMERS", "RequestError", "ServeError", "ServedModel", "VideoLlavaChatHandler",
           "VideoLlavaModelManager", "build_app", "check_transformers_version", "default_media_loader", "served_model"]
