"""Loading for every entry point (`videollava chat`, `demo`, `eval`, `serve`, Python): the model and processor (ours
without `trust_remote_code`, anything else through the Auto classes), the device, dtype, 4-/8-bit quantization and
multi-GPU dispatch, and the shipped default model and samples.

Public API:
    options = LoadOptions(device="auto", dtype="auto", device_map=None, load_4bit=False, load_8bit=False,
                          quantize="llm")                 # or `options_from_args(args)` after `add_loading_arguments`
    config, processor = load_processor(path)
    model = load_model(path, config, options=options)    # eval mode, placed by `device_map`; never `.to()`-ed
    quantization_config(bits=4, compute_dtype=torch.float32)  # the `BitsAndBytesConfig` used, for your own loads

Quantization (bitsandbytes, the `[quant]` extra): `--load-4bit` is NF4 with double quantization and compute dtype
bf16 on GPU / fp32 on CPU; `--load-8bit` is LLM.int8(). By default only the language model is quantized (the
original Video-LLaVA does the same): both towers, the projector and `lm_head` stay in the compute dtype through
`llm_int8_skip_modules`; `quantize="all"` quantizes the towers and the projector too. Models are placed while
loading (`device_map={"": device}`, or `"auto"` to spread over every visible GPU) and never moved with `.to()`,
which quantized and dispatched models refuse.

Every failure a user can fix raises `ChatError` with a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    AutoModelForImageTextToText.register(LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration,
                                         exist_ok=True)
    AutoImageProcessor.register(LanguageBindVideoLlavaConfig, LanguageBindImageProcessor, exist_ok=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to many lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def load_processor(path: str, trust_remote_code: bool = False, revision: str | None = None):
    """`(config, processor)`: our processor for this package's model type, `AutoProcessor` otherwise."""
    from transformers import AutoConfig, AutoProcessor

    from modeling_videollava import LanguageBindVideoLlavaConfig
    from processing import LanguageBindVideoLlavaProcessor

    register_our_classes()
    local_like = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path
    if local_like and not Path(path).expanduser().is_dir():
        raise ChatError(f"cannot load a model from {path}: no such folder")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
        if isinstance(config, LanguageBindVideoLlavaConfig):
            processor = LanguageBindVideoLlavaProcessor.from_pretrained(path, revision=revision)
        else:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:  # noqa: BLE001 - every loading failure becomes one line
        hub_like = not Path(path).exists() and path.count("/") == 1 and not path.startswith((".", "/", "~"))
        hint = " (no such folder; as a Hub id it needs the network or a cached copy)" if hub_like else ""
        raise ChatError(f"cannot load a model from {path}{hint}: {first_line(exc)}") from exc
    if getattr(processor, "chat_template", None) is None:
        raise ChatError(f"the processor in {path} has no chat template")
    return config, processor


QUANTIZE_CHOICES = ("llm", "all")
# modules kept in the compute dtype by default (the original quantizes only the LLM); matched from the module root
LLM_ONLY_SKIP = ["model.image_tower", "model.video_tower", "model.multi_modal_projector", "lm_head"]


@dataclass
class LoadOptions:
    """How to load a model: device or `device_map`, dtype, quantization. See the module docstring."""

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None  # "auto" | "balanced" | "balanced_low_0" | "sequential": spread over GPUs
    load_4bit: bool = False
    load_8bit: bool = False
    quantize: str = "llm"  # "llm": the language model only; "all": towers and projector too
    trust_remote_code: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.load_4bit and self.load_8bit:
            raise ChatError("--load-4bit and --load-8bit exclude each other; pick one")
        if self.quantize not in QUANTIZE_CHOICES:
            raise ChatError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {self.quantize!r}")
        if self.dtype not in ("auto", *DTYPES):
            raise ChatError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def bits(self) -> int | None:
        return 4 if self.load_4bit else 8 if self.load_8bit else None


def add_loading_arguments(parser: argparse.ArgumentParser, dtype_default: str = "auto", device: bool = True,
                          dtype: bool = True) -> None:
    """The loading flags shared by `chat`, `demo`, `eval` and `serve` (read back with `options_from_args`);
    `device=False` / `dtype=False` leave out flags the caller defines itself."""
    group = parser.add_argument_group("loading")
    if device:
        group.add_argument("--device", default="auto",
                           help="auto (default: cuda if available), cpu, cuda, cuda:N, mps")
    if dtype:
        group.add_argument("--dtype", default=dtype_default, choices=["auto", *DTYPES],
                           help=f"weights / compute dtype (default {dtype_default}; auto = the checkpoint's, float32 "
                                "on CPU for float16 checkpoints and for quantized models)")
    group.add_argument("--device-map", default=None, metavar="MAP",
                       help="auto | balanced | sequential: spread the model over every visible GPU (accelerate)")
    group.add_argument("--load-4bit", action="store_true",
                       help="quantize to 4 bit (NF4, double quantization; bitsandbytes, extra [quant])")
    group.add_argument("--load-8bit", action="store_true", help="quantize to 8 bit (LLM.int8(); extra [quant])")
    group.add_argument("--quantize", default="llm", choices=QUANTIZE_CHOICES,
                       help="with --load-4bit/--load-8bit: llm (default: towers, projector, lm_head stay in the "
                            "compute dtype, as in the original) or all")


def options_from_args(args: argparse.Namespace, **overrides: Any) -> LoadOptions:
    """`LoadOptions` from the flags of `add_loading_arguments` (and `--trust-remote-code` / `--revision` if any)."""
    values = dict(device=getattr(args, "device", "auto"), dtype=args.dtype, device_map=args.device_map,
                  load_4bit=args.load_4bit, load_8bit=args.load_8bit, quantize=args.quantize,
                  trust_remote_code=getattr(args, "trust_remote_code", False),
                  revision=getattr(args, "revision", None))
    return LoadOptions(**(values | overrides))


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Raise `ChatError` naming the pip extra when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ChatError(f"{purpose} needs {module}: pip install 'videollava-lb[{extra}]' (or pip install {module})")


def quantization_config(bits: int, compute_dtype: torch.dtype = torch.float32, quantize: str = "llm"):
    """The `BitsAndBytesConfig` for `bits` (4: NF4 + double quantization; 8: LLM.int8()); see the module docstring."""
    require_extra("bitsandbytes", "quant", f"--load-{bits}bit")
    from transformers import BitsAndBytesConfig

    skip = LLM_ONLY_SKIP if quantize == "llm" else ["lm_head"]
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(skip))
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    raise ValueError(f"bits must be 4 or 8, got {bits}")


def _torch_dtype(options: LoadOptions, config, device: torch.device):
    """The dtype to load in: as asked; `auto` keeps the checkpoint's, except float32 for float16 on CPU and for
    quantized models on CPU (bitsandbytes computes in fp32 there) and bfloat16 for quantized models on GPU."""
    if options.dtype != "auto":
        return DTYPES[options.dtype]
    if options.bits is not None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and getattr(config, "dtype", None) in (torch.float16, "float16"):
        return torch.float32
    return "auto"


def load_model(path: str, config=None, device: str | torch.device = "auto", dtype: str = "auto",
               trust_remote_code: bool = False, options: LoadOptions | None = None):
    """Weights placed while loading (never `.to()`-ed), in eval mode. `options` wins over `device`/`dtype`."""
    from transformers import AutoModelForImageTextToText

    options = options or LoadOptions(device=str(device), dtype=dtype, trust_remote_code=trust_remote_code)
    target = resolve_device(options.device) if options.device_map is None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _torch_dtype(options, config, target)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": options.trust_remote_code}
    if options.revision:
        kwargs["revision"] = options.revision
    if config is not None:
        kwargs["config"] = config
    if options.device_map is not None:
        require_extra("accelerate", "dev", "--device-map")
        kwargs["device_map"] = options.device_map
    else:
        kwargs["device_map"] = {"": str(target)}
    if options.bits is not None:
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32
        kwargs["quantization_config"] = quantization_config(options.bits, compute, options.quantize)
        bnb_logger = logging.getLogger("bitsandbytes")
        if bnb_logger.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
            # per-call notes of the CPU path ("inputs will be cast to float16", no `kernels` package): harmless
            bnb_logger.setLevel(logging.ERROR)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except ChatError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ChatError(f"cannot load the model weights from {path}: {first_line(exc)}") from exc
    logger.debug("loaded %s: dtype %s, device map %s, %s", path, torch_dtype, kwargs["device_map"],
                 f"{options.bits}-bit ({options.quantize})" if options.bits else "not quantized")
    return model.eval()


def is_ours(path: str, revision: str | None = None) -> bool:
    """Whether `path` holds this package's model type (loaded with our installed code, no `trust_remote_code`)."""
    from transformers import AutoConfig

    from modeling_videollava import LanguageBindVideoLlavaConfig

    register_our_classes()
    try:
        return isinstance(AutoConfig.from_pretrained(path, revision=revision), LanguageBindVideoLlavaConfig)
    except ValueError:  # a model type only its own Hub code knows
        return False


def load_model_and_processor(path: str, options: LoadOptions, padding_side: str | None = "left"):
    """`(model, processor)` for batch callers (`videollava eval`): foreign model types run their own Hub code."""
    if not options.trust_remote_code and not is_ours(path, options.revision):
        options = dataclasses.replace(options, trust_remote_code=True)
    config, processor = load_processor(path, options.trust_remote_code, options.revision)
    model = load_model(path, config, options=options)
    if padding_side is not None:
        processor.tokenizer.padding_side = padding_side  # batched generation appends after the prompt
    return model, processor


def count_quantized(model) -> dict[str, int]:
    """bitsandbytes linear layers per part (`language_model`, `image_tower`, `video_tower`, `projector`, `other`)."""
    counts = {"language_model": 0, "image_tower": 0, "video_tower": 0, "projector": 0, "other": 0}
    for name, module in model.named_modules():
        if type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        part = next((p for p in ("image_tower", "video_tower", "language_model") if f".{p}." in f".{name}"),
                    "projector" if "multi_modal_projector" in name else "other")
        counts[part] += 1
    return counts


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


def check_frames(config, num_frames: int | None) -> None:
    """Our video tower has a trained frame count; another `--num-frames` interpolates its temporal embedding."""
    video_config = getattr(config, "video_config", None)
    if num_frames is None or video_config is None or not getattr(video_config, "add_time_attn", False):
        return
    if num_frames != video_config.num_frames and not video_config.interpolate_temporal_embedding:
        logger.warning("the video tower was trained on %d frames; interpolating its temporal embedding to %d",
                       video_config.num_frames, num_frames)
        video_config.interpolate_temporal_embedding = True


__all__ = ["DEFAULT_MODEL", "LLM_ONLY_SKIP", "SAMPLES_DIR", "ChatError", "LoadOptions", "add_loading_arguments",
           "check_frames", "count_quantized", "first_line", "is_ours", "list_samples", "load_model",
           "load_model_and_processor", "load_processor",
           "options_from_args", "quantization_config", "require_extra", "resolve_device", "resolve_sample"]
