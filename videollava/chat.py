"""`videollava chat`: ask a Video-LLaVA about images and videos, in one shot or as a multi-turn session.

Run as:
    videollava chat --video sample:red_square_right.mp4 "Which way does the shape move?"   # embedded tiny model
    videollava chat --model out/videollava-7b --video clip.mp4                              # interactive session
    videollava chat --model converted/Video-LLaVA-7B --load-4bit --image a.png "What is this?"   # 4-bit LLM

A thin command over `videollava.engine` (the same engine as `videollava demo`). With a PROMPT it prints one answer;
without one it reads questions from the terminal (or stdin) until `exit` or end of input; a bad turn (too long for
the model, not UTF-8) prints one `error:` line and the session goes on. The history follows SPEC §6: Vicuna v1
prompts with the media placeholders in the first user turn only. Media are decoded and sent through the towers
once per conversation: the KV cache of the conversation so far is kept between turns, and each turn only prefills
its own new tokens. Loading flags (`--load-4bit`, `--load-8bit`, `--device-map auto`, `--dtype`) are those of
`videollava.loading`. Tokens stream as they are generated;
decoding is greedy unless `--temperature` > 0. Without `--model`, the tiny model shipped in the package
(`videollava/default_model/`, trained on synthetic coloured shapes) answers; `sample:NAME` names a shipped medium
(`--list-samples`). Problems with the model, the media or the options print one `error:` line and exit non-zero
(`videollava -v chat ...` shows tracebacks and per-turn timings).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

import torch

from .engine import Conversation, Engine, GenerationSettings, TurnStats
from .loading import (DEFAULT_MODEL, SAMPLES_DIR, ChatError, add_loading_arguments, check_frames, first_line,
                      list_samples, load_model, load_processor, options_from_args)
from .media import DEFAULT_CACHE_MB, MediaCache, Medium, load_media


logger = logging.getLogger(__name__)

EXIT_WORDS = ("exit", "quit", "/exit", "/quit")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one `error:` line (no usage block) and exits with status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.__class__ = _ArgumentParser  # the dispatcher builds a plain parser; report errors on one line
    parser.add_argument("prompt", nargs="?", help="a question; without one, start an interactive session")
    parser.add_argument("--model", help="model folder or Hub id (default: the tiny model shipped in the package)")
    parser.add_argument("--image", action="append", default=[], metavar="FILE",
                        help="an image (repeatable); `sample:NAME` for a shipped sample")
    parser.add_argument("--video", action="append", default=[], metavar="FILE",
                        help="a video (repeatable); `sample:NAME` for a shipped sample")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap on tokens per answer (default 256)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames sampled per video (default: the model's, 8 for Video-LLaVA-7B)")
    parser.add_argument("--system", default=None, help="replace the system prompt of the chat template")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow Hub custom code for models that are not this package's (ours never need it)")
    parser.add_argument("--list-samples", action="store_true", help="list the shipped sample media and exit")
    parser.add_argument("--media-cache-mb", type=int, default=DEFAULT_CACHE_MB,
                        help=f"memory bound of the encoded-media LRU (default {DEFAULT_CACHE_MB} MiB; 0 = off)")
    add_loading_arguments(parser)


################
# Python helpers (kept for scripts written against earlier versions)
################
class ChatSession:
    """One conversation about fixed media on a private `Engine` (see `videollava.engine` for the real API)."""

    def __init__(self, model, processor, media: list[Medium], max_new_tokens: int = 256, temperature: float = 0.0,
                 system: str | None = None):
        self.media = media
        self.engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens, temperature))
        self.conversation = self.engine.conversation(system)

    @property
    def messages(self) -> list[dict]:
        return self.conversation.messages()

    @property
    def last_stats(self) -> TurnStats | None:
        return self.conversation.last_stats

    def ask(self, text: str, out: TextIO | None = None, prefix: str = "") -> str:
        """Answer `text`, streaming `prefix` + answer to `out`; the media go with the first question."""
        media = [] if self.conversation.turns else self.media
        return stream_answer(self.conversation, text, media, out, prefix)


def stream_answer(conv: Conversation, text: str, media: list[Medium], out: TextIO | None, prefix: str = "",
                  settings: GenerationSettings | None = None) -> str:
    """Write `prefix` + the streamed answer + a newline to `out` (the prefix only once text arrives)."""
    for piece in conv.ask(text, media, settings):
        if out is not None:
            out.write(prefix + piece)
            out.flush()
            prefix = ""
    if out is not None:
        out.write(prefix + "\n")
        out.flush()
    logger.debug(conv.last_stats.describe(len(conv.turns)))
    return conv.turns[-1].answer


def log_tower_calls(model) -> dict[str, int]:
    """Count (and log at DEBUG) every image / video tower forward; returns the live counters."""
    counts = {"image": 0, "video": 0}
    backbone = getattr(model, "model", model)
    for kind in counts:
        tower = getattr(backbone, f"{kind}_tower", None)
        if tower is None:
            continue
        target = getattr(tower, "embeddings", tower)  # ours runs the tower through `hidden_state`, not `forward`

        def hook(module, args, output, kind=kind) -> None:
            counts[kind] += 1
            rows = (output if isinstance(output, torch.Tensor) else output[0]).shape[0]  # other towers: ModelOutput
            logger.debug("%s tower: encoded %d %s(s)", kind, rows, "frame" if kind == "video" else kind)

        target.register_forward_hook(hook)
    return counts


################
# Command
################
def _interactive(conv: Conversation, media: list[Medium], settings: GenerationSettings, out: TextIO) -> int:
    """Read questions until `exit` / end of input; a bad turn prints one `error:` line and the session goes on."""
    tty = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # undecodable bytes reach the engine, which names them
    if tty:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        names = ", ".join(m.source for m in media) or "no media"
        sys.stderr.write(f"Chatting about {names}. Type 'exit' or press Ctrl-D to quit.\n")
    while True:
        try:
            text = input("USER: " if tty else "")
        except EOFError:
            if tty:
                out.write("\n")
            return 0
        text = text.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            return 0
        try:
            stream_answer(conv, text, [] if conv.turns else media, out, prefix="ASSISTANT: ", settings=settings)
        except ChatError as exc:
            out.flush()
            sys.stderr.write(f"error: {exc} (the conversation goes on)\n")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    if not verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    out = sys.stdout
    try:
        if args.list_samples:
            list_samples(out)
            return 0
        for flag, value, low in (("--temperature", args.temperature, 0), ("--max-new-tokens", args.max_new_tokens, 1),
                                 ("--num-frames", args.num_frames, 1), ("--media-cache-mb", args.media_cache_mb, 0)):
            if value is not None and value < low:
                raise ChatError(f"{flag} must be >= {low}, got {value}")
        settings = GenerationSettings(args.max_new_tokens, args.temperature)
        options = options_from_args(args)
        if options.device_map is None:
            from .loading import resolve_device

            resolve_device(options.device)  # a bad --device fails before anything loads
        path = args.model or str(DEFAULT_MODEL)
        if args.model is None and not (DEFAULT_MODEL / "config.json").is_file():
            raise ChatError(f"the embedded model is missing from this install ({DEFAULT_MODEL}); pass --model")
        config, processor = load_processor(path, args.trust_remote_code)
        check_frames(config, args.num_frames)
        media = load_media(processor, args.image, args.video, args.num_frames)
        model = load_model(path, config, options=options)
        log_tower_calls(model)
        engine = Engine(model, processor, MediaCache(args.media_cache_mb * 2**20), settings, args.num_frames)
        conv = engine.conversation(args.system)
        if args.prompt is not None:
            stream_answer(conv, args.prompt, media, out)
            return 0
        return _interactive(conv, media, settings, out)
    except ChatError as exc:
        out.flush()
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, the traceback with -v
        if verbose:
            raise
        out.flush()
        hint = "run `videollava -v chat ...` for details"
        sys.stderr.write(f"error: {type(exc).__name__}: {first_line(exc)} ({hint})\n")
        return 1


__all__ = ["DEFAULT_MODEL", "SAMPLES_DIR", "ChatError", "ChatSession", "Medium", "add_arguments", "load_media",
           "load_model", "load_processor", "log_tower_calls", "run", "stream_answer"]
