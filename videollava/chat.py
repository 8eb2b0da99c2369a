"""`videollava chat`: ask a Video-LLaVA about images and videos, in one shot or as a multi-turn session.

Run as:
    videollava chat --video sample:red_square_right.mp4 "Which way does the shape move?"   # embedded tiny model
    videollava chat --model out/videollava-7b --video clip.mp4                              # interactive session
    videollava chat --model LanguageBind/Video-LLaVA-7B-hf --trust-remote-code --image a.png "What is this?"

With a PROMPT it prints one answer; without one it reads questions from the terminal (or stdin) until `exit` or
end of input. The history follows SPEC §6: Vicuna v1 prompts with the media placeholders in the first user turn
only. Media are decoded and sent through the towers once per conversation: the KV cache of the conversation so far
is kept between turns, and each turn only prefills its own new tokens. Tokens stream as they are generated;
decoding is greedy unless `--temperature` > 0. Without `--model`, the tiny model shipped in the package
(`videollava/default_model/`, trained on synthetic coloured shapes) answers; `sample:NAME` names a shipped medium
(`--list-samples`). Problems with the model, the media or the options print one `error:` line and exit non-zero
(`videollava -v chat ...` shows tracebacks and per-turn timings).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch

from .loading import (DEFAULT_MODEL, DTYPES, SAMPLES_DIR, ChatError, Medium, check_frames, first_line, list_samples,
                      load_media, load_model, load_processor, resolve_device)


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
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="weights dtype; auto = the checkpoint's, float32 on CPU for float16 checkpoints")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames sampled per video (default: the model's, 8 for Video-LLaVA-7B)")
    parser.add_argument("--system", default=None, help="replace the system prompt of the chat template")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow Hub custom code for models that are not this package's (ours never need it)")
    parser.add_argument("--list-samples", action="store_true", help="list the shipped sample media and exit")


################
# Conversation
################
class _Streamer:
    """Streams decoded text to `out` as tokens arrive and notes when the first new token came (a `BaseStreamer`)."""

    def __init__(self, tokenizer, out: TextIO | None, prefix: str = ""):
        from transformers import TextStreamer

        self.first_token_at: float | None = None
        self._text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._text.on_finalized_text = self._write
        self._out = out
        self._prefix = prefix  # written with the first text, after anything logged while the prompt was prefilled
        self._prompt_seen = False

    def _write(self, text: str, stream_end: bool = False) -> None:
        if self._out is not None:
            self._out.write(self._prefix + text + ("\n" if stream_end else ""))
            self._out.flush()
            self._prefix = ""

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._prompt_seen = True
        self._text.put(value)

    def end(self) -> None:
        self._text.end()


@dataclass
class TurnStats:
    prompt_tokens: int
    prefilled_tokens: int
    new_tokens: int
    first_token_s: float
    total_s: float


@dataclass
class ChatSession:
    """A conversation with one model about fixed media.

    The media go through the towers on the first turn only: the KV cache of everything seen so far is kept, each
    new turn is rendered with the chat template over the whole history (SPEC §6: placeholders in the first user
    turn only), and only the tokens after the longest prefix shared with the cache are prefilled.
    """

    model: Any
    processor: Any
    media: list[Medium]
    max_new_tokens: int = 256
    temperature: float = 0.0
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    last_stats: TurnStats | None = field(default=None, init=False)
    _cache: Any = field(default=None, init=False, repr=False)  # the LLM's KV cache of the conversation so far
    _cached_ids: torch.Tensor | None = field(default=None, init=False, repr=False)  # the tokens behind it

    def __post_init__(self) -> None:
        if self.system is not None:
            self.messages.append({"role": "system", "content": self.system})

    def _user_message(self, text: str) -> dict:
        if any(m["role"] == "user" for m in self.messages):
            return {"role": "user", "content": text}
        items = [{"type": m.kind, m.kind: m.source} for m in self.media]
        return {"role": "user", "content": [*items, {"type": "text", "text": text}]}

    def _encode(self, messages: list[dict]) -> dict:
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = [m.data for m in self.media if m.kind == "image"] or None
        videos = [m.data for m in self.media if m.kind == "video"] or None
        return self.processor(text=prompt, images=images, videos=videos, return_tensors="pt")

    def _reuse_cache(self, input_ids: torch.Tensor) -> int:
        """Crop the cache to the longest prefix it shares with `input_ids`; returns how many tokens it keeps."""
        if self._cache is None or self._cached_ids is None:
            return 0
        cached = self._cached_ids[: self._cache.get_seq_length()]
        n = min(len(cached), len(input_ids) - 1)
        same = (cached[:n] == input_ids[:n]).long()
        keep = int(same.cumprod(0).sum())
        visual_ids = [getattr(self.model.config, k, None) for k in ("image_token_id", "video_token_id")]
        visual = torch.isin(input_ids, torch.tensor([i for i in visual_ids if i is not None]))
        if visual.any() and keep <= int(visual.nonzero().max()):
            return 0  # the media would have to be encoded again: start from scratch
        self._cache.crop(keep - self._cache.get_seq_length())  # negative: drop that many trailing tokens
        return keep

    @torch.inference_mode()
    def ask(self, text: str, out: TextIO | None = None, prefix: str = "") -> str:
        """Answer `text` given the media and the history, streaming `prefix` + answer to `out`; returns the answer."""
        from transformers import DynamicCache

        messages = [*self.messages, self._user_message(text)]
        inputs = self._encode(messages)
        input_ids = inputs["input_ids"][0]
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if limit is not None and len(input_ids) >= limit:
            raise ChatError(
                f"the conversation is {len(input_ids)} tokens, the model takes at most {limit}; start a new one"
            )
        keep = self._reuse_cache(input_ids)
        if keep == 0:
            self._cache = DynamicCache(config=self.model.config.get_text_config())
            kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        else:
            kwargs = {}  # visual features are already in the cache
        device = self.model.device
        max_new = self.max_new_tokens if limit is None else min(self.max_new_tokens, limit - len(input_ids))
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        streamer = _Streamer(self.processor.tokenizer, out, prefix)
        start = time.perf_counter()
        output = self.model.generate(
            input_ids=input_ids[None].to(device),
            attention_mask=torch.ones(1, len(input_ids), dtype=torch.long, device=device),
            past_key_values=self._cache,
            max_new_tokens=max_new,
            streamer=streamer,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            **sampling,
            **{k: v.to(device) for k, v in kwargs.items()},
        )[0].cpu()
        total = time.perf_counter() - start
        self._cached_ids = output
        new = output[len(input_ids):]
        answer = self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages = [*messages, {"role": "assistant", "content": answer}]
        first = (streamer.first_token_at or time.perf_counter()) - start
        self.last_stats = TurnStats(len(input_ids), len(input_ids) - keep, len(new), first, total)
        logger.debug(
            "turn %d: %d prompt tokens, %d prefilled, %d new; first token %.3f s, answer %.3f s",
            sum(m["role"] == "user" for m in self.messages), len(input_ids), len(input_ids) - keep, len(new),
            first, total,
        )
        return answer


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
def _interactive(session: ChatSession, out: TextIO) -> int:
    tty = sys.stdin.isatty()
    if tty:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        names = ", ".join(m.source for m in session.media) or "no media"
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
        session.ask(text, out, prefix="ASSISTANT: ")


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
        if args.temperature < 0:
            raise ChatError(f"--temperature must be >= 0, got {args.temperature}")
        if args.max_new_tokens < 1:
            raise ChatError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        if args.num_frames is not None and args.num_frames < 1:
            raise ChatError(f"--num-frames must be >= 1, got {args.num_frames}")
        device = resolve_device(args.device)
        path = args.model or str(DEFAULT_MODEL)
        if args.model is None and not (DEFAULT_MODEL / "config.json").is_file():
            raise ChatError(f"the embedded model is missing from this install ({DEFAULT_MODEL}); pass --model")
        config, processor = load_processor(path, args.trust_remote_code)
        check_frames(config, args.num_frames)
        media = load_media(processor, args.image, args.video, args.num_frames)
        model = load_model(path, config, device, args.dtype, args.trust_remote_code)
        log_tower_calls(model)
        session = ChatSession(model, processor, media, args.max_new_tokens, args.temperature, args.system)
        if args.prompt is not None:
            session.ask(args.prompt, out)
            return 0
        return _interactive(session, out)
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
           "load_model", "load_processor", "log_tower_calls", "run"]
