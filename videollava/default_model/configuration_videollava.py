"""Configuration of Video-LLaVA with LanguageBind towers (arXiv 2311.10122).

`LanguageBindVisionConfig` is a CLIP ViT config plus LanguageBind's video fields (`num_frames`, `add_time_attn`).
`LanguageBindVideoLlavaConfig` composes an image tower, a video tower, any causal-LM text config (Llama by default) and the
shared projector. Defaults reproduce `LanguageBind/Video-LLaVA-7B` (SPEC §1-§5).

Uploaded as Hub custom code: imports only installed libraries.
"""

from typing import Literal

from transformers import AutoConfig, CLIPVisionConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


FeatureSelect = Literal["patch", "cls_patch"]
# Written into every saved config.json so the folder loads with `trust_remote_code=True` through any of these.
AUTO_MAP = {
    "AutoConfig": "configuration_videollava.LanguageBindVideoLlavaConfig",
    "AutoModel": "modeling_videollava.LanguageBindVideoLlavaModel",
    "AutoModelForImageTextToText": "modeling_videollava.LanguageBindVideoLlavaForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_videollava.LanguageBindVideoLlavaForConditionalGeneration",
}


class LanguageBindVisionConfig(CLIPVisionConfig):
    r"""
    A LanguageBind vision tower: CLIP ViT-L/14 @ 224 by default, optionally with divided temporal attention.

    Args:
        num_frames (`int`, defaults to 8):
            Frames per video the temporal embedding was trained for (LanguageBind_Video_merge: 8).
        add_time_attn (`bool`, defaults to `False`):
            Add per-layer `temporal_embedding`, `temporal_layer_norm1` and `temporal_attn` (the video tower).
        interpolate_temporal_embedding (`bool`, defaults to `False`):
            Accept videos whose frame count differs from `num_frames` by linearly interpolating the temporal
            embedding. Off by default: the released weights were only trained on 8 frames, so other counts raise.
        hidden_act (`str`, defaults to `"gelu"`):
            LanguageBind Large towers come from OpenCLIP DataComp ViT-L/14, which uses exact GELU (SPEC §1.3,
            UNVERIFIED against the tower's own config.json). The `-hf` port omits it and gets CLIP's `quick_gelu`.
    """

    model_type = "languagebind_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1024
    intermediate_size: int = 4096
    projection_dim: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    patch_size: int | list[int] | tuple[int, int] | None = 14
    hidden_act: str = "gelu"
    num_frames: int = 8
    add_time_attn: bool = False
    interpolate_temporal_embedding: bool = False

    @property
    def num_patches(self) -> int:
        """Patches per frame (256 for ViT-L/14 @ 224)."""
        return (self.image_size // self.patch_size) ** 2


class LanguageBindVideoLlavaConfig(PreTrainedConfig):
    r"""
    Video-LLaVA: LanguageBind image tower + LanguageBind video tower -> one shared MLP projector -> causal LM.

    Args:
        image_config (`LanguageBindVisionConfig | dict`): the image tower (no temporal attention).
        video_config (`LanguageBindVisionConfig | dict`): the video tower (`add_time_attn=True`, `num_frames=8`).
        text_config (`PreTrainedConfig | dict`): any `AutoConfig` causal LM; Vicuna-7B v1.5 (Llama) by default.
        image_token_index / video_token_index (`int`): placeholder ids, one per visual feature row.
        vision_feature_layer (`int`, defaults to -2): index into the towers' hidden states (embeddings = 0).
        image_feature_select (`"patch" | "cls_patch"`, defaults to `"patch"`): drop CLS -> 256 tokens per image.
        video_feature_select (`"patch" | "cls_patch"`, defaults to `"cls_patch"`): keep CLS -> 8 x 257 = 2056 tokens
            per video (current Video-LLaVA code and the `-hf` port); `"patch"` is the Nov-2023 8 x 256 layout (SPEC §2.4).
        projector_hidden_act (`str`, defaults to `"gelu"`): activation between the projector's two linears.
        multimodal_projector_bias (`bool`, defaults to `True`).
        run_unused_towers (`bool`, defaults to `False`): in training, run a tower that has no input in the batch
            on one blank input and add its output times zero, so every rank touches the same parameters. DeepSpeed
            ZeRO-3 hangs without it when one rank's batch has a video and another's has none.
    """

    model_type = "videollava_languagebind"
    _auto_class = "AutoConfig"
    attribute_map = {"image_token_id": "image_token_index", "video_token_id": "video_token_index"}
    sub_configs_defaults = {
        "image_config": SubConfigSpec(config_class=LanguageBindVisionConfig, init_kwargs={"num_frames": 1}),
        "video_config": SubConfigSpec(
            config_class=LanguageBindVisionConfig, init_kwargs={"num_frames": 8, "add_time_attn": True}
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="llama",
            init_kwargs={
                "vocab_size": 32064,
                "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5,
                "pad_token_id": 32002,
            },
        ),
    }

    image_config: dict | PreTrainedConfig | None = None
    video_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_index: int = 32000
    video_token_index: int = 32001
    vision_feature_layer: int = -2
    image_feature_select: FeatureSelect = "patch"
    video_feature_select: FeatureSelect = "cls_patch"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    run_unused_towers: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.auto_map = {**(getattr(self, "auto_map", None) or {}), **AUTO_MAP}
        if self.image_config.hidden_size != self.video_config.hidden_size:
            raise ValueError(
                "The shared projector needs towers of one width: image_config.hidden_size="
                f"{self.image_config.hidden_size}, video_config.hidden_size={self.video_config.hidden_size}."
            )
        for name in ("image_feature_select", "video_feature_select"):
            if getattr(self, name) not in ("patch", "cls_patch"):
                raise ValueError(f"{name} must be 'patch' or 'cls_patch', got {getattr(self, name)!r}.")

    @property
    def image_seq_length(self) -> int:
        """Placeholder tokens per image (256 for Video-LLaVA-7B)."""
        return self.image_config.num_patches + (self.image_feature_select == "cls_patch")

    @property
    def frame_seq_length(self) -> int:
        """Placeholder tokens per video frame (257 with CLS, 256 without)."""
        return self.video_config.num_patches + (self.video_feature_select == "cls_patch")

    @property
    def video_seq_length(self) -> int:
        """Placeholder tokens per video of `video_config.num_frames` frames (2056 for Video-LLaVA-7B)."""
        return self.video_config.num_frames * self.frame_seq_length


__all__ = ["LanguageBindVisionConfig", "LanguageBindVideoLlavaConfig"]
