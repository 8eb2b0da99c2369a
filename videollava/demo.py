"""`videollava demo`: a Gradio web demo on `videollava.engine` (the same engine as `videollava chat`).

Run as:
    videollava demo                                         # the embedded default model, http://127.0.0.1:7860
    videollava demo --model converted/Video-LLaVA-7B --load-4bit --port 8080
    videollava demo --model DIR --device-map auto --share   # several GPUs; a public gradio.live link

A `gr.ChatInterface(multimodal=True)`: a `gr.MultimodalTextbox` takes images and videos (several per message),
answers stream token by token, conversations are multi-turn (each medium goes through its tower once: the engine
keeps the conversation's KV cache, and its media LRU keeps encoded media across conversations), retry / undo /
clear are the chatbot's own buttons, the generation settings (temperature, max new tokens, frames) sit in an
accordion and the shipped samples are clickable examples. A bad file (corrupt video, audio only, unsupported type)
answers with one warning line in the chat and the session goes on. The chat function's API name is `chat`:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict({"text": "Which way does the shape move?",
                                              "files": [handle_file("moving.mp4")]}, api_name="/chat")

Gradio is the `[demo]` extra. Everything runs offline (no analytics, system fonts, `--share` off by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .engine import Conversation, Engine, GenerationSettings, Turn
from .loading import (DEFAULT_MODEL, SAMPLES_DIR, ChatError, add_loading_arguments, check_frames, first_line,
                      load_model, load_processor, options_from_args, require_extra, resolve_device)
from .media import DEFAULT_CACHE_MB, IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaCache, guess_kind


logger = logging.getLogger(__name__)

WARNING = "⚠️ "  # answers that start with it report a problem; such turns are not part of the conversation
MAX_CONVERSATIONS = 8  # live conversations (each with its KV cache) kept for follow-ups, least recent dropped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder or Hub id (default: the tiny model shipped in the package)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--temperature", type=float, default=0.0, help="initial temperature (0 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="initial cap on tokens per answer")
    parser.add_argument("--media-cache-mb", type=int, default=DEFAULT_CACHE_MB,
                        help=f"memory bound of the encoded-media LRU (default {DEFAULT_CACHE_MB} MiB; 0 = off)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow Hub custom code for the model")
    add_loading_arguments(parser)


################
# History <-> conversations
################
def _parts(content: Any) -> list[tuple[str, str]]:
    """`("text", s)` / `("file", path)` parts of one Gradio message content, whatever shape Gradio gives it."""
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)]
    if isinstance(content, (list, tuple)):
        return [part for item in content for part in _parts(item)]
    if isinstance(content, dict):
        if content.get("type") == "text" or "text" in content and "path" not in content:
            return [("text", content.get("text") or "")]
        file = content.get("file", content)
        path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
        return [("file", path)] if path else []
    path = getattr(content, "path", None) or getattr(getattr(content, "value", None), "get", lambda _: None)("path")
    return [("file", path)] if path else []


def history_turns(history: list[dict]) -> list[tuple[str, list[str], str]]:
    """Gradio messages -> `(question, file paths, answer)` per answered turn; warned-about turns are left out."""
    turns, question, files, answer = [], [], [], None
    for message in history:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if role == "user":
            if answer is not None:
                turns.append((" ".join(question).strip(), files, answer))
                question, files, answer = [], [], None
            for kind, value in _parts(content):
                (question if kind == "text" else files).append(value)
        elif role == "assistant":
            text = " ".join(v for k, v in _parts(content) if k == "text")
            answer = text if answer is None else f"{answer} {text}"
    if answer is not None:
        turns.append((" ".join(question).strip(), files, answer))
    return [t for t in turns if not t[2].startswith(WARNING)]


class DemoState:
    """The engine plus a small pool of live conversations, matched to the page's history on every message."""

    def __init__(self, engine: Engine, default_frames: int | None):
        self.engine = engine
        self.default_frames = default_frames
        self.pool: OrderedDict[int, Conversation] = OrderedDict()

    def load(self, path: str, frames: int | None):
        kind = guess_kind(path)
        if kind is None:
            name = path.rsplit("/", 1)[-1]
            known = " ".join(sorted({*IMAGE_SUFFIXES, *VIDEO_SUFFIXES}))
            raise ChatError(f"cannot use {name}: not an image or a video (supported: {known})")
        return self.engine.load(kind, path, frames if kind == "video" else None)

    def conversation(self, history: list[dict], frames: int | None) -> Conversation:
        """A live conversation whose turns start with the page's history (cropped to it), or a new one."""
        wanted = history_turns(history)
        media = [[self.load(p, frames) for p in files] for _, files, _ in wanted]
        signature = [(q, [m.key for m in ms], a) for (q, _, a), ms in zip(wanted, media)]
        for key, conv in reversed(self.pool.items()):
            have = [(t.question, [m.key for m in t.media], t.answer) for t in conv.turns]
            if have[: len(signature)] == signature:
                conv.truncate(len(signature))
                self.pool.move_to_end(key)
                return conv
        conv = self.engine.conversation()
        conv.turns = [Turn(q, ms, a) for (q, _, a), ms in zip(wanted, media)]
        self.pool[id(conv)] = conv
        while len(self.pool) > MAX_CONVERSATIONS:
            self.pool.popitem(last=False)
        return conv

    def chat(self, message: dict, history: list[dict], temperature: float = 0.0, max_new_tokens: int = 256,
             frames: int | None = None) -> Iterator[str]:
        """The ChatInterface function (API name `chat`): streams the answer so far; problems become one warning."""
        frames = int(frames) if frames else self.default_frames
        try:
            settings = GenerationSettings(int(max_new_tokens), float(temperature))
            if frames != self.default_frames:
                check_frames(self.engine.model.config, frames)
            message = message if isinstance(message, dict) else {"text": str(message or ""), "files": []}
            text = (message.get("text") or "").strip()
            if not text:
                raise ChatError("type a question to go with the files" if message.get("files") else
                                "type a question")
            media = [self.load(f if isinstance(f, str) else f.get("path"), frames) for f in message.get("files") or []]
            conv = self.conversation(history or [], frames)
            answer = ""
            for piece in conv.ask(text, media, settings):
                answer += piece
                yield answer.strip()
            yield conv.turns[-1].answer
        except ChatError as exc:
            yield WARNING + str(exc)


################
# Page
################
def sample_examples(default_frames: int | None, temperature: float, max_new_tokens: int) -> list[list]:
    """One clickable example per shipped sample: its first question the model answered correctly."""
    index = SAMPLES_DIR / "samples.json"
    examples = []
    for sample in json.loads(index.read_text()) if index.is_file() else []:
        qa = next((q for q in sample["questions"] if q.get("model_answer") == q["answer"]), sample["questions"][0])
        examples.append([{"text": qa["question"], "files": [str(SAMPLES_DIR / sample["file"])]}, temperature,
                         max_new_tokens, default_frames or 8])
    return examples


def build_demo(state: DemoState, temperature: float = 0.0, max_new_tokens: int = 256, title: str = "Video-LLaVA"):
    """The Gradio app (a `gr.ChatInterface`, not launched)."""
    require_extra("gradio", "demo", "videollava demo")
    import gradio as gr

    frames = state.default_frames or 8
    settings = [
        gr.Slider(0.0, 1.5, value=temperature, step=0.05, label="Temperature (0 = greedy)", render=False),
        gr.Slider(1, 1024, value=max_new_tokens, step=1, label="Max new tokens", render=False),
        gr.Slider(1, 32, value=frames, step=1, label="Frames per video", render=False),
    ]
    return gr.ChatInterface(
        state.chat, multimodal=True, api_name="chat", title=title,
        description="Ask about images and videos (several per message). Media are encoded once per "
                    "conversation; follow-up questions reuse them.",
        # no `file_types`: an unsupported file reaches `chat`, which answers with a warning in the chat
        textbox=gr.MultimodalTextbox(file_count="multiple", placeholder="Attach images or videos and ask"),
        chatbot=gr.Chatbot(label="Video-LLaVA", height=480),
        additional_inputs=settings,
        additional_inputs_accordion=gr.Accordion("Generation settings", open=False),
        examples=sample_examples(state.default_frames, temperature, max_new_tokens) or None,
        cache_examples=False, analytics_enabled=False,
    )


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up self-checks
    try:
        require_extra("gradio", "demo", "videollava demo")
        if args.media_cache_mb < 0:
            raise ChatError(f"--media-cache-mb must be >= 0, got {args.media_cache_mb}")
        options = options_from_args(args)
        if options.device_map is None:
            resolve_device(options.device)
        path = args.model or str(DEFAULT_MODEL)
        config, processor = load_processor(path, args.trust_remote_code)
        model = load_model(path, config, options=options)
        engine = Engine(model, processor, MediaCache(args.media_cache_mb * 2**20),
                        GenerationSettings(args.max_new_tokens, args.temperature))
        frames = getattr(getattr(config, "video_config", None), "num_frames", None)
        demo = build_demo(DemoState(engine, frames), args.temperature, args.max_new_tokens)
    except ChatError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts: offline
    try:
        demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port,
                                                       share=args.share, theme=theme, footer_links=["api"],
                                                       allowed_paths=[str(SAMPLES_DIR)])
    except OSError as exc:
        sys.stderr.write(f"error: cannot serve on {args.host}:{args.port}: {first_line(exc)}\n")
        return 1
    return 0


__all__ = ["DemoState", "WARNING", "add_arguments", "build_demo", "history_turns", "run"]
