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
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch


logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = PACKAGE_DIR / "default_model"
SAMPLES_DIR = PACKAGE_DIR / "samples"
SAMPLE_PREFIX = "sample:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EXIT_WORDS = ("exit", "quit", "/exit", "/quit")


class ChatError(Exception):
    """A problem the user can fix (model path, media, options); printed as one line, exit status 1."""


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
# Loading
################
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ChatError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ChatError(f"--device {name}: no CUDA device is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ChatError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ChatError(f"--device {name}: MPS is not available; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ChatError(f"--device {name}: unsupported device type {device.type!r} (use cpu, cuda or mps)")
    return device


def _register_our_classes() -> None:
    """Let the Auto classes load this package's model type from our installed code, without `trust_remote_code`."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText

    from modeling_videollava import VideoLlavaConfig, VideoLlavaForConditionalGeneration
    from processing import LanguageBindImageProcessor

    AutoConfig.register(VideoLlavaConfig.model_type, VideoLlavaConfig, exist_ok=True)
    AutoModelForImageTextToText.register(VideoLlavaConfig, VideoLlavaForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(VideoLlavaConfig, LanguageBindImageProcessor, exist_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def load_processor(path: str, trust_remote_code: bool = False):
    """The model's processor: ours for this package's model type, `AutoProcessor` otherwise."""
    from transformers import AutoConfig, AutoProcessor

    from modeling_videollava import VideoLlavaConfig
    from processing import VideoLlavaProcessor

    _register_our_classes()
    local_like = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path
    if local_like and not Path(path).expanduser().is_dir():
        raise ChatError(f"cannot load a model from {path}: no such folder")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if isinstance(config, VideoLlavaConfig):
            processor = VideoLlavaProcessor.from_pretrained(path)
        else:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - every loading failure becomes one line
        hub_like = not Path(path).exists() and path.count("/") == 1 and not path.startswith((".", "/", "~"))
        hint = " (no such folder; as a Hub id it needs the network or a cached copy)" if hub_like else ""
        raise ChatError(f"cannot load a model from {path}{hint}: {_first_line(exc)}") from exc
    if getattr(processor, "chat_template", None) is None:
        raise ChatError(f"the processor in {path} has no chat template")
    return config, processor


def load_model(path: str, config, device: torch.device, dtype: str, trust_remote_code: bool = False):
    """Weights on `device`, in eval mode; `dtype="auto"` keeps the checkpoint's (float16 becomes float32 on CPU)."""
    from transformers import AutoModelForImageTextToText

    torch_dtype = DTYPES.get(dtype, "auto")
    if dtype == "auto" and device.type == "cpu" and getattr(config, "dtype", None) in (torch.float16, "float16"):
        torch_dtype = torch.float32
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # noqa: BLE001
        raise ChatError(f"cannot load the model weights from {path}: {_first_line(exc)}") from exc
    return model.to(device).eval()


def resolve_sample(source: str) -> str:
    """`sample:NAME` -> the shipped file; anything else is returned unchanged."""
    if not source.startswith(SAMPLE_PREFIX):
        return source
    name = source[len(SAMPLE_PREFIX):]
    path = SAMPLES_DIR / name
    if not name or not path.is_file():
        known = ", ".join(sorted(p.name for p in SAMPLES_DIR.glob("*") if p.suffix in (".mp4", ".png"))) or "none"
        raise ChatError(f"no shipped sample named {name!r} (known: {known})")
    return str(path)


def list_samples(out: TextIO) -> None:
    """Print every shipped sample with its example questions (from `samples/samples.json`)."""
    index = SAMPLES_DIR / "samples.json"
    entries = json.loads(index.read_text()) if index.is_file() else []
    if not entries:
        out.write("no samples are shipped with this install\n")
    for entry in entries:
        flag = "--video" if entry["file"].endswith(".mp4") else "--image"
        out.write(f"{flag} {SAMPLE_PREFIX}{entry['file']}  ({entry.get('description', '')})\n")
        for qa in entry.get("questions", []):
            out.write(f"    {qa['question']}  ->  {qa['answer']}\n")


@dataclass
class Medium:
    """One image or video of the conversation, decoded once."""

    kind: str  # "image" | "video"
    source: str
    data: Any  # PIL image or `VideoClip`


def load_media(processor, images: list[str], videos: list[str], num_frames: int | None) -> list[Medium]:
    """Decode every medium up front (before the model loads), one clear error per unreadable file."""
    from PIL import Image

    media = []
    for source in videos:
        path = resolve_sample(source)
        try:
            if hasattr(processor, "load_video"):  # ours: LanguageBind's frame sampling, returns a `VideoClip`
                clip = processor.load_video(path, num_frames=num_frames)
            else:  # other processors take decoded frames
                from transformers.video_utils import load_video

                clip = load_video(path, num_frames=num_frames or 8)[0]
        except Exception as exc:  # noqa: BLE001 - VideoDecodeError, or anything PyAV raises
            raise ChatError(f"cannot read video {source}: {getattr(exc, 'reason', _first_line(exc))}") from exc
        media.append(Medium("video", source, clip))
    for source in images:
        path = resolve_sample(source)
        try:
            with Image.open(path) as image:
                media.append(Medium("image", source, image.convert("RGB")))
        except FileNotFoundError as exc:
            raise ChatError(f"cannot read image {source}: file not found") from exc
        except Exception as exc:  # noqa: BLE001 - PIL.UnidentifiedImageError, truncated files, ...
            raise ChatError(f"cannot read image {source}: {_first_line(exc)}") from exc
    return media


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
            logger.debug("%s tower: encoded %d %s(s)", kind, output.shape[0], "frame" if kind == "video" else kind)

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
        _check_frames(config, args.num_frames)
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
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, the traceback with -v
        if verbose:
            raise
        out.flush()
        print(f"error: {type(exc).__name__}: {_first_line(exc)} (run `videollava -v chat ...` for details)",
              file=sys.stderr)
        return 1


def _check_frames(config, num_frames: int | None) -> None:
    """Our video tower was trained on a fixed frame count: another `--num-frames` interpolates its temporal embedding."""
    video_config = getattr(config, "video_config", None)
    if num_frames is None or video_config is None or not getattr(video_config, "add_time_attn", False):
        return
    if num_frames != video_config.num_frames and not video_config.interpolate_temporal_embedding:
        logger.warning("the video tower was trained on %d frames; interpolating its temporal embedding to %d",
                       video_config.num_frames, num_frames)
        video_config.interpolate_temporal_embedding = True


__all__ = ["ChatError", "ChatSession", "DEFAULT_MODEL", "SAMPLES_DIR", "add_arguments", "load_media", "load_model",
           "load_processor", "log_tower_calls", "run"]
