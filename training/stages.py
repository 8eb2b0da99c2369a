"""Training stages as data: which part of Video-LLaVA is frozen, fully trained or LoRA-adapted.

The four parts follow the model layout: `model.image_tower`, `model.video_tower`, `model.multi_modal_projector`
and the language model (`model.language_model` + top-level `lm_head`). `apply_stage` is the only place that calls
`requires_grad_`; `lora_config` turns `"lora"` parts into one peft `LoraConfig` whose `target_modules` regex can only
match inside those parts (a plain name list such as `["q_proj", "v_proj"]` would also hit the CLIP towers, USER_NEEDS
a9/d2). Fully trained parts of a LoRA run go to `modules_to_save`, so the projector is saved with the adapter.

Presets (SPEC §8.1): stage 1 = projector only; stage 2 = projector + LLM (full or LoRA); towers always frozen.

QLoRA (`--load_4bit true --train_language_model lora`): `load_4bit_model` loads the language model in 4 bit (the
`BitsAndBytesConfig` of `videollava.loading`: NF4, double quantization, compute dtype bf16 on GPU / fp32 on CPU;
towers, projector and `lm_head` unquantized), `prepare_qlora` runs peft's `prepare_model_for_kbit_training`, and the
adapter + projector are saved exactly as for LoRA. The merged model is built from the full-precision base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from torch import nn


logger = logging.getLogger(__name__)

Trainable = Literal["frozen", "full", "lora"]

# part -> parameter-name prefixes (after stripping a peft `base_model.model.` wrapper)
PART_PREFIXES: dict[str, tuple[str, ...]] = {
    "image_tower": ("model.image_tower.",),
    "video_tower": ("model.video_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}
# part -> (module regex root, linear layer names) for LoRA targets; re.fullmatch'ed by peft on full module names
LORA_TARGETS: dict[str, tuple[str, str]] = {
    "image_tower": (r"model\.image_tower", "q_proj|k_proj|v_proj|out_proj|fc1|fc2"),
    "video_tower": (r"model\.video_tower", "q_proj|k_proj|v_proj|out_proj|fc1|fc2"),
    "projector": (r"model\.multi_modal_projector", "linear_1|linear_2"),
    "language_model": (r"model\.language_model", "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"),
}
SAVE_NAMES = {"image_tower": "image_tower", "video_tower": "video_tower", "projector": "multi_modal_projector"}


@dataclass
class StageArguments:
    """What each part of the model does in this stage, plus LoRA hyper-parameters."""

    train_image_tower: Trainable = field(default="frozen", metadata={"help": "image tower: frozen | full | lora"})
    train_video_tower: Trainable = field(default="frozen", metadata={"help": "video tower: frozen | full | lora"})
    train_projector: Trainable = field(default="full", metadata={"help": "projector: frozen | full | lora"})
    train_language_model: Trainable = field(default="frozen", metadata={"help": "LLM + lm_head: frozen | full | lora"})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (Video-LLaVA finetune_lora.sh: 128)"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (Video-LLaVA: 256)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})

    def __post_init__(self) -> None:
        for part, mode in self.modes().items():
            if mode not in ("frozen", "full", "lora"):
                raise ValueError(f"--train_{part} must be frozen, full or lora, got {mode!r}")
        if all(mode == "frozen" for mode in self.modes().values()):
            raise ValueError("every part is frozen: set at least one --train_* flag to full or lora")
        if self.uses_lora and self.train_language_model == "full":
            raise ValueError(
                "--train_language_model full cannot be combined with LoRA on another part (lm_head cannot be a peft "
                "modules_to_save under TRL's fused LM head); use lora for the language model or no LoRA at all"
            )
        if self.uses_lora and (self.lora_r <= 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            raise ValueError(f"bad LoRA settings: lora_r={self.lora_r}, lora_alpha={self.lora_alpha}, "
                             f"lora_dropout={self.lora_dropout}")

    def modes(self) -> dict[str, str]:
        return {part: getattr(self, f"train_{part}") for part in PART_PREFIXES}

    @property
    def uses_lora(self) -> bool:
        return "lora" in self.modes().values()


def check_qlora(stage: StageArguments) -> None:
    """QLoRA trains adapters on the 4-bit language model: it cannot be trained fully, and something must be LoRA."""
    if stage.train_language_model != "lora":
        raise ValueError(f"--load_4bit true quantizes the language model: use --train_language_model lora (QLoRA), "
                         f"got {stage.train_language_model}")


def load_4bit_model(path: str, dtype: str = "auto", attn_implementation: str | None = None,
                    trust_remote_code: bool = True):
    """The model at `path` with its language model in 4 bit, on this process's device (see the module docstring)."""
    import torch
    from accelerate import PartialState

    from videollava.loading import quantization_config, require_extra

    require_extra("bitsandbytes", "quant", "--load_4bit")
    state = PartialState()
    on_gpu = state.device.type == "cuda"
    compute = getattr(torch, dtype) if dtype != "auto" else torch.bfloat16 if on_gpu else torch.float32
    kwargs = {"dtype": compute, "quantization_config": quantization_config(4, compute),
              "device_map": {"": state.local_process_index if on_gpu else "cpu"}}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration as cls

        return cls.from_pretrained(path, **kwargs)
    except ImportError:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)


def _inputs_to_weight_dtype(module: nn.Module, args: tuple) -> tuple:
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if hasattr(a, "is_floating_point") and a.is_floating_point() else a for a in args)


def prepare_qlora(model: nn.Module, gradient_checkpointing: bool = False, checkpointing_kwargs: dict | None = None):
    """peft's `prepare_model_for_kbit_training` (freezes everything; `apply_stage` then unfreezes the full parts).

    TRL casts a quantized model's trainable parameters to bf16 (the QLoRA recipe), so the fully trained projector
    (a peft `modules_to_save` copy, hooks included) casts its inputs to its own dtype.
    """
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs=checkpointing_kwargs)
    model.model.multi_modal_projector.register_forward_pre_hook(_inputs_to_weight_dtype)
    return model


def part_of(name: str) -> str | None:
    """Which part a parameter name belongs to (peft wrapper prefixes are ignored); `None` for anything else."""
    name = name.removeprefix("base_model.model.")
    for part, prefixes in PART_PREFIXES.items():
        if name.startswith(prefixes):
            return part
    return None


def count_trainable(model: nn.Module) -> dict[str, int]:
    """Trainable parameter count per part (`other` for anything outside the four parts), and `total`."""
    counts = {part: 0 for part in PART_PREFIXES} | {"other": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[part_of(name) or "other"] += param.numel()
    counts["total"] = sum(counts.values())
    return counts


def log_trainable(model: nn.Module) -> dict[str, int]:
    """Log and return `count_trainable(model)` with each part's total size."""
    counts = count_trainable(model)
    sizes = {part: 0 for part in PART_PREFIXES} | {"other": 0}
    for name, param in model.named_parameters():
        sizes[part_of(name) or "other"] += param.numel()
    for part, size in sizes.items():
        if size:
            logger.info("trainable %-15s %12s / %12s", part, f"{counts[part]:,}", f"{size:,}")
    logger.info("trainable total           %12s / %12s", f"{counts['total']:,}", f"{sum(sizes.values()):,}")
    return counts


def apply_stage(model: nn.Module, stage: StageArguments) -> dict[str, int]:
    """Set `requires_grad` per part: only `"full"` parts train here; `"lora"` parts are frozen and get adapters later.

    Returns the trainable parameter count per part (see `count_trainable`), also logged.
    """
    modes = stage.modes()
    missing = [part for part in PART_PREFIXES if not any(part_of(n) == part for n, _ in model.named_parameters())]
    if missing:
        raise ValueError(f"model has no parameters for part(s) {missing}; expected names starting with "
                         f"{[PART_PREFIXES[p][0] for p in missing]}")
    for name, param in model.named_parameters():
        part = part_of(name)
        param.requires_grad_(part is not None and modes[part] == "full")
    logger.info("stage: %s", ", ".join(f"{p}={m}" for p, m in modes.items()))
    return log_trainable(model)


def lora_config(stage: StageArguments):
    """A peft `LoraConfig` for the stage's `"lora"` parts (full parts in `modules_to_save`), or `None`."""
    if not stage.uses_lora:
        return None
    from peft import LoraConfig

    modes = stage.modes()
    roots = [LORA_TARGETS[p] for p, m in modes.items() if m == "lora"]
    target = "|".join(rf"(?:.*{root}\..*\.(?:{layers}))" for root, layers in roots)
    save = [SAVE_NAMES[p] for p, m in modes.items() if m == "full" and p in SAVE_NAMES]
    return LoraConfig(
        r=stage.lora_r,
        lora_alpha=stage.lora_alpha,
        lora_dropout=stage.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=target,
        modules_to_save=save or None,
    )
