"""Loading for `videollava chat`: the model and processor (ours without `trust_remote_code`, anything else through the
Auto classes), the device, the shipped default model and samples, and the media of a conversation.

Every failure a user can fix raises `ChatError` with a one-line message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch


logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = PACKAGE_DIR / "default_model"
SAMPLES_DIR = PACKAGE_DIR / "samples"
SAMPLE_PREFIX = "sample:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ChatError(Exception):
    """A problem the user can fix (model path, media, options); printed as one line, exit status 1."""


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


def register_our_classes() -> None:
    """Let the Auto classes load this package's model type from our installed code, without `trust_remote_code`."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText

    from modeling_videollava import LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration
    from processing import LanguageBindImageProcessor

    AutoConfig.register(LanguageBindVideoLlavaConfig.model_type, LanguageBindVideoLlavaConfig, exist_ok=True)
    AutoModelForImageTextToText.register(LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(LanguageBindVideoLlavaConfig, LanguageBindImageProcessor, exist_ok=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to many lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def load_processor(path: str, trust_remote_code: bool = False):
    """The model's processor: ours for this package's model type, `AutoProcessor` otherwise."""
    from transformers import AutoConfig, AutoProcessor

    from modeling_videollava import LanguageBindVideoLlavaConfig
    from processing import LanguageBindVideoLlavaProcessor

    register_our_classes()
    local_like = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path
    if local_like and not Path(path).expanduser().is_dir():
        raise ChatError(f"cannot load a model from {path}: no such folder")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if isinstance(config, LanguageBindVideoLlavaConfig):
            processor = LanguageBindVideoLlavaProcessor.from_pretrained(path)
        else:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - every loading failure becomes one line
        hub_like = not Path(path).exists() and path.count("/") == 1 and not path.startswith((".", "/", "~"))
        hint = " (no such folder; as a Hub id it needs the network or a cached copy)" if hub_like else ""
        raise ChatError(f"cannot load a model from {path}{hint}: {first_line(exc)}") from exc
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
        raise ChatError(f"cannot load the model weights from {path}: {first_line(exc)}") from exc
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
            raise ChatError(f"cannot read video {source}: {getattr(exc, 'reason', first_line(exc))}") from exc
        media.append(Medium("video", source, clip))
    for source in images:
        path = resolve_sample(source)
        try:
            with Image.open(path) as image:
                media.append(Medium("image", source, image.convert("RGB")))
        except FileNotFoundError as exc:
            raise ChatError(f"cannot read image {source}: file not found") from exc
        except Exception as exc:  # noqa: BLE001 - PIL.UnidentifiedImageError, truncated files, ...
            raise ChatError(f"cannot read image {source}: {first_line(exc)}") from exc
    return media


def check_frames(config, num_frames: int | None) -> None:
    """Our video tower has a trained frame count; another `--num-frames` interpolates its temporal embedding."""
    video_config = getattr(config, "video_config", None)
    if num_frames is None or video_config is None or not getattr(video_config, "add_time_attn", False):
        return
    if num_frames != video_config.num_frames and not video_config.interpolate_temporal_embedding:
        logger.warning("the video tower was trained on %d frames; interpolating its temporal embedding to %d",
                       video_config.num_frames, num_frames)
        video_config.interpolate_temporal_embedding = True


__all__ = ["DEFAULT_MODEL", "SAMPLES_DIR", "ChatError", "Medium", "check_frames", "first_line", "list_samples",
           "load_media", "load_model", "load_processor", "resolve_device", "resolve_sample"]
