"""Video-LLaVA (arXiv 2311.10122): LanguageBind image + video towers -> one shared MLP projector -> causal LM.

Follows transformers' `models/video_llava` layout (backbone at `self.model`, top-level `lm_head`,
`get_image_features` / `get_video_features`, placeholder-mask merge) so TRL's SFTTrainer, peft and
`GenerationMixin` work unchanged. Unlike the built-in port, the video tower keeps LanguageBind's temporal attention
(SPEC §2.2), the towers read `hidden_states[-2]` without running the last block, and image / video feature selection
(CLS dropped or kept) is configurable per modality (SPEC §2.4).

Uploaded as Hub custom code: imports only installed libraries and its sibling files.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import ModelOutput
from transformers.utils import logging

from .configuration_videollava import LanguageBindVideoLlavaConfig
from .kv_cache import AppendCache
from .modeling_languagebind import LanguageBindVisionModel


logger = logging.get_logger(__name__)


@dataclass
class LanguageBindVideoLlavaModelOutputWithPast(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(B, S, D_text)`): the LLM's last hidden state.
        past_key_values (`Cache`): the KV cache, when `use_cache=True`.
        image_hidden_states (`torch.FloatTensor` of shape `(N_img, image_seq_length, D_text)`): projected images.
        video_hidden_states (`torch.FloatTensor` of shape `(N_vid, video_seq_length, D_text)`): projected videos.
    """

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None
    video_hidden_states: torch.FloatTensor | None = None


@dataclass
class LanguageBindVideoLlavaCausalLMOutputWithPast(ModelOutput):
    """Like `LanguageBindVideoLlavaModelOutputWithPast`, with `logits` `(B, S, vocab)` and the LM `loss` when labels are given."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None
    video_hidden_states: torch.FloatTensor | None = None


class LanguageBindVideoLlavaMultiModalProjector(nn.Module):
    """`mlp2x_gelu`: Linear -> GELU -> Linear, shared by images and videos (original keys `mm_projector.{0,2}`)."""

    def __init__(self, config: LanguageBindVideoLlavaConfig):
        super().__init__()
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.image_config.hidden_size, config.text_config.hidden_size, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class LanguageBindVideoLlavaPreTrainedModel(PreTrainedModel):
    config_class = LanguageBindVideoLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def post_init(self) -> None:
        super().post_init()
        # Children contribute their `_no_split_modules`; keep only classes that exist here, since accelerate's FSDP
        # auto-wrap raises on names it cannot find (ECOSYSTEM §2).
        present = {type(m).__name__ for m in self.modules()}
        self._no_split_modules = sorted({n for n in (self._no_split_modules or []) if n in present})


class LanguageBindVideoLlavaModel(LanguageBindVideoLlavaPreTrainedModel):
    """Towers, projector and the LLM backbone (no LM head)."""

    _auto_class = "AutoModel"

    def __init__(self, config: LanguageBindVideoLlavaConfig):
        super().__init__(config)
        self.image_tower = LanguageBindVisionModel(config.image_config)
        self.video_tower = LanguageBindVisionModel(config.video_config)
        self.multi_modal_projector = LanguageBindVideoLlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images `(N, 3, H, W)` -> projected features `(N, image_seq_length, D_text)` (CLS dropped by default)."""
        tower = self.image_tower
        # `hidden_state` is not `forward`, so accelerate's device hooks do not move its input: move it here
        pixels = pixel_values.to(device=tower.device, dtype=tower.dtype)
        features = tower.hidden_state(pixels, self.config.vision_feature_layer)  # (N, 1+P, D)
        if self.config.image_feature_select == "patch":
            features = features[:, 1:]
        return self.multi_modal_projector(features)

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Videos `(N, T, 3, H, W)` -> projected features `(N, T * frame_seq_length, D_text)`, frame-major."""
        if pixel_values_videos.ndim != 5:
            raise ValueError(f"pixel_values_videos must be (N, T, 3, H, W), got {tuple(pixel_values_videos.shape)}.")
        num_videos, num_frames = pixel_values_videos.shape[:2]
        tower = self.video_tower
        pixels = pixel_values_videos.to(device=tower.device, dtype=tower.dtype)
        features = tower.hidden_state(pixels, self.config.vision_feature_layer)
        features = features.view(num_videos, num_frames, *features.shape[1:])  # (N*T, 1+P, D) -> (N, T, 1+P, D)
        if self.config.video_feature_select == "patch":
            features = features[:, :, 1:]
        features = features.flatten(1, 2)  # (N, T, n, D) -> (N, T*n, D): frame-major, CLS first in each frame
        return self.multi_modal_projector(features)

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, token_id: int
    ) -> torch.Tensor:
        """Boolean `(B, S)` mask of the placeholder `token_id`, read from ids or, without ids, from embeddings."""
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    def _merge(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        features: torch.Tensor | None,
        token_id: int,
        modality: str,
    ) -> torch.Tensor:
        if features is None and inputs_embeds.shape[1] == 1:
            return inputs_embeds  # a decoding step: media were merged at prefill, skip the mask and its host sync
        mask = self.get_placeholder_mask(input_ids, inputs_embeds, token_id)
        n_tokens = int(mask.sum())
        n_features = 0 if features is None else features.shape[0] * features.shape[1]
        if features is None and n_tokens == 0:
            return inputs_embeds  # no media
        if n_tokens != n_features:
            per_item = "" if features is None else f" ({features.shape[0]} {modality}s x {features.shape[1]} each)"
            raise ValueError(
                f"{modality.capitalize()} features and {modality} tokens do not match: {n_tokens} <{modality}> "
                f"placeholder tokens in input_ids, {n_features} feature rows{per_item}. Build inputs with the "
                "processor, which expands each placeholder to the count the config implies, and never truncate "
                "inside a visual span."
            )
        features = features.to(inputs_embeds.device, inputs_embeds.dtype).flatten(0, 1)  # (N*L, D)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), features)

    def _unused_towers_output(self, has_images: bool, has_videos: bool, like: torch.Tensor) -> torch.Tensor:
        """Zero with a gradient path through the towers this batch did not use (see `config.run_unused_towers`)."""
        size = self.config.image_config.image_size
        total = like.new_zeros(())
        if not has_images:
            total = total + self.get_image_features(like.new_zeros(1, 3, size, size)).sum()
        if not has_videos:
            frames = self.config.video_config.num_frames
            total = total + self.get_video_features(like.new_zeros(1, frames, 3, size, size)).sum()
        return total.to(like.device) * 0.0

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> LanguageBindVideoLlavaModelOutputWithPast:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(B, S)`): tokens, each visual placeholder already expanded.
            pixel_values (`torch.Tensor` of shape `(N_img, 3, H, W)`): all images of the batch, in text order.
            pixel_values_videos (`torch.Tensor` of shape `(N_vid, T, 3, H, W)`): all videos, in text order.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        has_images = pixel_values is not None and pixel_values.shape[0] > 0
        has_videos = pixel_values_videos is not None and pixel_values_videos.shape[0] > 0
        image_features = self.get_image_features(pixel_values) if has_images else None
        video_features = self.get_video_features(pixel_values_videos) if has_videos else None
        inputs_embeds = self._merge(input_ids, inputs_embeds, image_features, self.config.image_token_id, "image")
        inputs_embeds = self._merge(input_ids, inputs_embeds, video_features, self.config.video_token_id, "video")
        if self.training and self.config.run_unused_towers and not (has_images and has_videos):
            inputs_embeds = inputs_embeds + self._unused_towers_output(has_images, has_videos, inputs_embeds)
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return LanguageBindVideoLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            video_hidden_states=video_features,
        )


class LanguageBindVideoLlavaForConditionalGeneration(LanguageBindVideoLlavaPreTrainedModel, GenerationMixin):
    """Video-LLaVA with its language-modelling head.

    Example:
        ```python
        >>> from transformers import AutoModelForImageTextToText, AutoProcessor
        >>> model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True, device_map="auto")
        >>> processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        >>> messages = [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
        ...                                          {"type": "text", "text": "What happens?"}]}]
        >>> inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
        ...                                        return_dict=True, return_tensors="pt").to(model.device)
        >>> out = model.generate(**inputs, max_new_tokens=64)
        ```
    """

    _auto_class = "AutoModelForImageTextToText"
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: LanguageBindVideoLlavaConfig):
        super().__init__(config)
        self.model = LanguageBindVideoLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        return self.model.get_video_features(pixel_values_videos)

    def generate(self, *args, **kwargs) -> torch.LongTensor | ModelOutput:
        """`GenerationMixin.generate`, with an `AppendCache` as the KV cache when the call names none (no
        `past_key_values`, no `cache_implementation`, cache on): the same tokens as the default `DynamicCache`,
        without copying the whole cache every step (see `kv_cache.py` for what that copy cost)."""
        config = kwargs.get("generation_config") or self.generation_config
        if (
            kwargs.get("past_key_values") is None
            and kwargs.get("use_cache", config.use_cache) is not False
            and kwargs.get("cache_implementation", config.cache_implementation) is None
            and AppendCache.fits(self.config.text_config)
        ):
            kwargs["past_key_values"] = AppendCache()
        return super().generate(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LanguageBindVideoLlavaCausalLMOutputWithPast:
        """`labels` `(B, S)` use -100 for positions without loss (prompt, placeholders, padding)."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LanguageBindVideoLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            video_hidden_states=outputs.video_hidden_states,
        )


__all__ = [
    "LanguageBindVideoLlavaForConditionalGeneration",
    "LanguageBindVideoLlavaModel",
    "LanguageBindVideoLlavaMultiModalProjector",
    "LanguageBindVideoLlavaPreTrainedModel",
]
