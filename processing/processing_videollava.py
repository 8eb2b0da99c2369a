"""Video-LLaVA processor: tokenizer + LanguageBind image and video preprocessing + the Vicuna-v1 chat template.

`<image>` expands to `image_seq_length` tokens (256) and `<video>` to `frame_seq_length` tokens per frame (8 x 257),
counts saved with the processor and taken from `LanguageBindVideoLlavaConfig` by `build_processor`. There is no `video_processor`
init attribute: transformers 5.23 cannot build one without torchvision, so videos go through the `video_processor`
property and `_process_videos` (ECOSYSTEM §1.5). Uploaded as Hub custom code: imports only its siblings and installed
libraries.
"""

import logging
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from .image_processing_videollava import LanguageBindImageProcessor
from .video_io import VideoClip, load_video
from .video_processing_videollava import transform_video


logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Vicuna v1 (SPEC §6.1): "{system} USER: <video>\n{q} ASSISTANT: {a}</s>USER: ..."; media placeholders are rendered
# where their items are, each followed by "\n" (SPEC §6.2); answers + "</s>" are inside {% generation %}.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + DEFAULT_SYSTEM_PROMPT.replace("'", "\\'") + "', start=0) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.start = 1 -%}"
    "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}"
    "{%- else -%}{%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\n') -%}{%- endif -%}"
    "{%- endif -%}"
    "{{- ns.system + ' ' -}}"
    "{%- for message in messages[ns.start:] -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- 'USER: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\n' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<video>\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'ASSISTANT: ' -}}"
    "{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\n') -}}"
    "{%- endif -%}"
    "{{- '</s>' -}}"
    "{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

_TOKEN_KEYS = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "mm_token_type_ids": 0,
    "offset_mapping": (0, 0),
}


def _is_frame(item: Any) -> bool:
    return isinstance(item, Image.Image) or (isinstance(item, np.ndarray) and item.ndim in (2, 3))


def flatten_videos(videos: Any) -> list[Any]:
    """One flat list of videos from a single video, a batch, or a batch of per-sample lists (chat templates).

    A video is a path, bytes, a binary file, a `(T, H, W[, C])` array / tensor, a `VideoClip`, or a list of frames
    (PIL images or `(H, W[, C])` arrays).
    """
    if isinstance(videos, torch.Tensor):
        videos = videos.numpy()
    if not isinstance(videos, (list, tuple)) or (videos and all(_is_frame(v) for v in videos)):
        return [videos]
    flat = []
    for video in videos:
        if isinstance(video, (list, tuple)) and not (video and all(_is_frame(v) for v in video)):
            flat.extend(flatten_videos(video) if video else [])
        else:
            flat.append(video.numpy() if isinstance(video, torch.Tensor) else video)
    return flat


class LanguageBindVideoLlavaProcessor(ProcessorMixin):
    r"""
    Builds Video-LLaVA inputs: `input_ids`, `attention_mask`, `pixel_values` `(N_img, 3, H, W)` and
    `pixel_values_videos` `(N_vid, T, 3, H, W)`.

    Args:
        image_processor (`LanguageBindImageProcessor`): images, and crop size / mean / std for video frames.
        tokenizer (`PreTrainedTokenizerBase`): must know `image_token` and `video_token`.
        chat_template (`str`, *optional*): defaults to the Vicuna-v1 template of SPEC §6.1.
        image_seq_length (`int`, defaults to 256): tokens per image.
        frame_seq_length (`int`, defaults to 257): tokens per video frame (CLS kept).
        num_frames (`int`, defaults to 8): frames sampled per video.
        visual_truncation (`"raise"` or `"keep"`, defaults to `"raise"`): with `truncation=True, max_length=n`, a cut
            that would remove visual tokens raises (naming the sample), or keeps every visual span whole (the
            sample may then exceed `max_length`). Text is truncated normally either way.

    Example:
        ```python
        >>> inputs = processor(text="USER: <video>\nWhat happens? ASSISTANT:", videos=["clip.mp4"], return_tensors="pt")
        >>> inputs["pixel_values_videos"].shape  # (1, 8, 3, 224, 224)
        ```
    """

    def __init__(
        self,
        image_processor: LanguageBindImageProcessor | None = None,
        tokenizer=None,
        chat_template: str | None = None,
        image_seq_length: int = 256,
        frame_seq_length: int = 257,
        num_frames: int = 8,
        image_token: str = "<image>",
        video_token: str = "<video>",
        visual_truncation: Literal["raise", "keep"] = "raise",
        **kwargs,
    ):
        if visual_truncation not in ("raise", "keep"):
            raise ValueError(f"visual_truncation must be 'raise' or 'keep', got {visual_truncation!r}")
        self.image_seq_length = image_seq_length
        self.frame_seq_length = frame_seq_length
        self.num_frames = num_frames
        self.image_token = image_token
        self.video_token = video_token
        self.visual_truncation = visual_truncation
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    @classmethod
    def from_config(cls, config, tokenizer, image_processor: LanguageBindImageProcessor | None = None,
                    **kwargs) -> "LanguageBindVideoLlavaProcessor":
        """Build from a `LanguageBindVideoLlavaConfig`: token counts, frame count and image size all come from the config.

        The tokenizer is set to left padding (batched generation, USER_NEEDS a3); training collators pass
        `padding_side="right"` per call if they want it.
        """
        tokens = tokenizer.convert_ids_to_tokens([config.image_token_index, config.video_token_index])
        if None in tokens:
            raise ValueError(
                f"The tokenizer has no token for image_token_index={config.image_token_index} or video_token_index="
                f"{config.video_token_index} (got {tokens}); add <image>/<video> and update the config."
            )
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
        if image_processor is None:
            image_processor = LanguageBindImageProcessor.for_image_size(config.image_config.image_size)
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_length=config.image_seq_length,
            frame_seq_length=config.frame_seq_length,
            num_frames=config.video_config.num_frames,
            image_token=tokens[0],
            video_token=tokens[1],
            **kwargs,
        )

    @property
    def video_processor(self) -> LanguageBindImageProcessor:
        # ProcessorMixin.__call__ routes `videos=` only when this attribute exists; frames use the image settings.
        return self.image_processor

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "pixel_values_videos"]

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        num_frames = video_inputs["pixel_values_videos"][video_idx].shape[0]
        return self.video_token * (self.frame_seq_length * num_frames)

    def load_video(self, video: Any, num_frames: int | None = None, fps: float | None = None,
                   **kwargs) -> VideoClip:
        """Decode and sample one video the way `__call__` does (see `load_video` for accepted sources)."""
        if isinstance(video, VideoClip):
            return video
        num_frames = num_frames or self.num_frames
        return load_video(video, num_frames, fps=fps, start=kwargs.get("start"), end=kwargs.get("end"),
                          max_frames=kwargs.get("max_frames"))

    def _process_videos(self, videos: Any, **kwargs) -> tuple[BatchFeature, list[str]]:
        crop = self.image_processor.crop_size
        clips = [self.load_video(video, kwargs.get("num_frames"), kwargs.get("fps")) for video in
                 flatten_videos(videos)]
        pixels = [
            transform_video(clip.frames, crop["height"], self.image_processor.image_mean,
                            self.image_processor.image_std)
            for clip in clips
        ]
        counts = sorted({p.shape[0] for p in pixels})
        if len(counts) > 1:
            raise ValueError(f"Videos in one batch must have the same number of frames, got {counts}; use num_frames.")
        processed = BatchFeature({"pixel_values_videos": torch.stack(pixels)})  # (N_vid, T, 3, H, W)
        replacements = [self.replace_video_token(processed, i) for i in range(len(pixels))]
        return processed, replacements

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs) -> None:
        if text is not None and self.video_token is not None:
            texts = [text] if isinstance(text, str) else list(text)
            found = [sample.count(self.video_token) for sample in texts]
            passed = 0 if videos is None else len(flatten_videos(videos))
            if sum(found) != passed:
                raise ValueError(
                    f"The prompts contain {sum(found)} {self.video_token} placeholders (per sample: {found}) but "
                    f"{passed} videos were passed."
                )
            text = [sample.replace(self.video_token, "") for sample in texts]
        super().validate_inputs(images=images, text=text, videos=None, audio=audio, **kwargs)

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs) -> BatchFeature:
        """Tokenize `text` with expanded placeholders and preprocess `images` / `videos` (see class docstring)."""
        text_kwargs = dict(kwargs.pop("text_kwargs", {}))
        options = {}
        for key in ("truncation", "max_length", "padding", "return_tensors", "pad_to_multiple_of", "padding_side"):
            if key in kwargs or key in text_kwargs:
                options[key] = kwargs.pop(key, text_kwargs.pop(key, None))
        truncation, max_length = options.get("truncation"), options.get("max_length")
        if text is None or not truncation or truncation == "do_not_truncate" or max_length is None:
            return super().__call__(images, text, videos, audio, text_kwargs=text_kwargs, **kwargs, **options)
        out = super().__call__(images, text, videos, audio, text_kwargs=text_kwargs, **kwargs)
        keep = [self._truncation_window(ids, max_length, i) for i, ids in enumerate(out["input_ids"])]
        for key in _TOKEN_KEYS:
            if key in out:
                out[key] = [list(values)[lo:hi] for values, (lo, hi) in zip(out[key], keep)]
        self._pad(out, options.get("padding", False), max_length, options.get("padding_side"))
        out.convert_to_tensors(tensor_type=options.get("return_tensors"))
        return out

    def _truncation_window(self, ids: list[int], max_length: int, sample: int) -> tuple[int, int]:
        """[lo, hi) of the tokens to keep: `max_length` of them, never cutting a visual span."""
        ids = list(ids)
        if len(ids) <= max_length:
            return 0, len(ids)
        visual = np.flatnonzero(np.isin(ids, [self.image_token_id, self.video_token_id]))
        left = self.tokenizer.truncation_side == "left"
        lo, hi = (len(ids) - max_length, len(ids)) if left else (0, max_length)
        cut = visual[(visual < lo) | (visual >= hi)]
        if len(cut) == 0:
            return lo, hi
        if self.visual_truncation == "raise":
            raise ValueError(
                f"Sample {sample} has {len(ids)} tokens, {len(visual)} of them visual; truncating to max_length="
                f"{max_length} would cut {len(cut)} visual tokens. Raise max_length to at least {len(ids)}, shorten "
                "the text, or use visual_truncation='keep'."
            )
        logger.warning("Sample %d: keeping its visual tokens whole, %d tokens > max_length=%d.", sample,
                       len(ids), max_length)
        return (min(lo, int(visual[0])), hi) if left else (lo, max(hi, int(visual[-1]) + 1))

    def _pad(self, out: BatchFeature, padding: Any, max_length: int, padding_side: str | None) -> None:
        lengths = [len(ids) for ids in out["input_ids"]]
        if padding in (False, None, "do_not_pad"):
            return
        target = max(lengths) if padding in (True, "longest") else max(max_length, *lengths)
        side = padding_side or self.tokenizer.padding_side
        for key, fill in _TOKEN_KEYS.items():
            if key not in out:
                continue
            fill = self.tokenizer.pad_token_id if key == "input_ids" else fill
            out[key] = [
                [fill] * (target - len(v)) + v if side == "left" else v + [fill] * (target - len(v)) for v in out[key]
            ]


def register_auto_classes() -> None:
    """Mark the processor classes for `AutoProcessor` / `AutoImageProcessor`, so `save_pretrained` writes `auto_map`
    and copies this module and its siblings next to the weights (idempotent)."""
    LanguageBindVideoLlavaProcessor.register_for_auto_class("AutoProcessor")
    LanguageBindImageProcessor.register_for_auto_class("AutoImageProcessor")


def build_processor(config, tokenizer, **kwargs) -> LanguageBindVideoLlavaProcessor:
    """The processor matching a `LanguageBindVideoLlavaConfig` (token counts, frames and image size from the config), registered
    for `AutoProcessor` so that `processor.save_pretrained(model_dir)` makes it loadable with `trust_remote_code`."""
    register_auto_classes()
    return LanguageBindVideoLlavaProcessor.from_config(config, tokenizer, **kwargs)


__all__ = ["CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "LanguageBindVideoLlavaProcessor", "build_processor", "flatten_videos",
           "register_auto_classes"]
