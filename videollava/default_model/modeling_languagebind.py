"""LanguageBind vision towers: a CLIP ViT, plus divided temporal attention for video.

Reproduces `videollava/model/multimodal_encoder/languagebind/video/modeling_video.py` of PKU-YuanGroup/Video-LLaVA
(commit 984e65b, L74-151; SPEC §2.2). In every layer of the video tower, before the spatial CLIP block:

    h = h + temporal_embedding[t]                                 # added every layer, stays in the residual stream
    h = h + temporal_attn(temporal_layer_norm1(h))                # attention over the T frames at each position

The image tower is the same module with `add_time_attn=False`, i.e. a CLIP ViT (parameter names match
`transformers.CLIPVisionModel`, so CLIP and `-hf` checkpoints load key for key).

Notable features: stops after the layer Video-LLaVA reads (`hidden_states[-2]` skips the last block's compute),
attention through transformers' attention backends (sdpa / eager / flash), gradient checkpointing per layer.
Uploaded as Hub custom code: imports only installed libraries and `.configuration_videollava`.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_videollava import LanguageBindVisionConfig


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention on (B, heads, S, head_dim) inputs; returns (B, S, heads, head_dim)."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class LanguageBindVisionEmbeddings(nn.Module):
    """Patch embedding + CLS + learned positions, as CLIP (keys `class_embedding`, `patch_embedding`, ...)."""

    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.class_embedding = nn.Parameter(torch.zeros(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.num_positions = config.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.register_buffer("position_ids", torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        if height != self.image_size or width != self.image_size:
            raise ValueError(
                f"pixel_values are {height}x{width} but the tower expects {self.image_size}x{self.image_size}."
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, D, h, w)
        patches = patches.flatten(2).transpose(1, 2)  # (B, h*w, D)
        cls = self.class_embedding.expand(batch_size, 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class LanguageBindAttention(nn.Module):
    """Bidirectional multi-head attention over the second axis, CLIP's parameter layout (`q/k/v/out_proj`)."""

    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.head_dim = self.embed_dim // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        # (B, S, D) -> (B, heads, S, head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention(
            self, query, key, value, None, scaling=self.scale, dropout=self.dropout if self.training else 0.0
        )
        return self.out_proj(attn_output.reshape(*input_shape, -1).contiguous())


class LanguageBindMLP(nn.Module):
    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class LanguageBindEncoderLayer(GradientCheckpointingLayer):
    """A pre-LN CLIP block, preceded in the video tower by LanguageBind's temporal sub-block."""

    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__()
        self.config = config
        embed_dim = config.hidden_size
        if config.add_time_attn:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, embed_dim))
            self.temporal_layer_norm1 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
            self.temporal_attn = LanguageBindAttention(config)
        self.self_attn = LanguageBindAttention(config)
        self.layer_norm1 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)
        self.mlp = LanguageBindMLP(config)
        self.layer_norm2 = nn.LayerNorm(embed_dim, eps=config.layer_norm_eps)

    def temporal_embedding_for(self, num_frames: int) -> torch.Tensor:
        """The (1, T, D) temporal embedding for `num_frames` frames, interpolated only if the config allows it."""
        trained = self.temporal_embedding.shape[1]
        if num_frames == trained:
            return self.temporal_embedding
        if not self.config.interpolate_temporal_embedding:
            raise ValueError(
                f"The video tower was trained on {trained} frames per video but got {num_frames}. Sample "
                f"{trained} frames, or set video_config.interpolate_temporal_embedding=True to interpolate the "
                "temporal embedding (quality beyond the trained count is untested)."
            )
        # (1, T0, D) -> (1, D, T0) -> (1, D, T) -> (1, T, D)
        resized = nn.functional.interpolate(
            self.temporal_embedding.transpose(1, 2), size=num_frames, mode="linear", align_corners=True
        )
        return resized.transpose(1, 2)

    def temporal_block(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, n, d = hidden_states.shape
        b = bt // num_frames
        # (B*T, N, D) -> (B, T, N, D); the embedding of frame t is added at every spatial position
        frames = hidden_states.view(b, num_frames, n, d) + self.temporal_embedding_for(num_frames).unsqueeze(2)
        # (B, T, N, D) -> (B, N, T, D) -> (B*N, T, D): attend across frames at each spatial position
        across_time = frames.transpose(1, 2).reshape(b * n, num_frames, d)
        attended = self.temporal_attn(self.temporal_layer_norm1(across_time))
        # (B*N, T, D) -> (B, N, T, D) -> (B, T, N, D)
        attended = attended.view(b, n, num_frames, d).transpose(1, 2)
        return (frames + attended).reshape(bt, n, d)

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        if self.config.add_time_attn:
            hidden_states = self.temporal_block(hidden_states, num_frames)
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class LanguageBindEncoder(nn.Module):
    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([LanguageBindEncoderLayer(config) for _ in range(config.num_hidden_layers)])


class LanguageBindPreTrainedModel(PreTrainedModel):
    config_class = LanguageBindVisionConfig
    base_model_prefix = "languagebind"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LanguageBindEncoderLayer", "LanguageBindVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        factor = self.config.initializer_factor
        if isinstance(module, LanguageBindVisionEmbeddings):
            init.normal_(module.class_embedding, std=module.embed_dim**-0.5 * factor)
            init.normal_(module.patch_embedding.weight, std=self.config.initializer_range * factor)
            init.normal_(module.position_embedding.weight, std=self.config.initializer_range * factor)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, LanguageBindEncoderLayer) and self.config.add_time_attn:
            init.normal_(module.temporal_embedding, std=self.config.hidden_size**-0.5)


class LanguageBindVisionModel(LanguageBindPreTrainedModel):
    """LanguageBind image tower (`add_time_attn=False`) or video tower (`add_time_attn=True`).

    Args:
        config (`LanguageBindVisionConfig`): tower hyper-parameters.

    Example:
        ```python
        >>> tower = LanguageBindVisionModel(LanguageBindVisionConfig(add_time_attn=True, num_frames=8))
        >>> out = tower(torch.randn(2, 8, 3, 224, 224), output_hidden_states=True)
        >>> out.hidden_states[-2].shape  # (B*T, 257, 1024), frame-major
        ```
    """

    def __init__(self, config: LanguageBindVisionConfig):
        super().__init__(config)
        self.embeddings = LanguageBindVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = LanguageBindEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def hidden_state(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """Return `hidden_states[layer]` (0 = embeddings, negative from the end) computing only the layers needed.

        Args:
            pixel_values (`torch.Tensor`): images `(B, 3, H, W)` or videos `(B, T, 3, H, W)`.
            layer (`int`): index into the `num_hidden_layers + 1` hidden states.

        Returns:
            `torch.Tensor` of shape `(B, N, D)` for images or `(B*T, N, D)` for videos, frame-major.
        """
        depth = layer % (self.config.num_hidden_layers + 1)
        hidden_states, num_frames = self._embed(pixel_values)
        for encoder_layer in self.encoder.layers[:depth]:
            hidden_states = encoder_layer(hidden_states, num_frames=num_frames)
        return hidden_states

    def _embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int]:
        if pixel_values.ndim == 5:
            b, t = pixel_values.shape[:2]
            pixel_values = pixel_values.flatten(0, 1)  # (B, T, C, H, W) -> (B*T, C, H, W), frame index fastest
        elif pixel_values.ndim == 4:
            t = 1
        else:
            raise ValueError(f"pixel_values must be (B, 3, H, W) or (B, T, 3, H, W), got {tuple(pixel_values.shape)}.")
        return self.pre_layrnorm(self.embeddings(pixel_values)), t

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict: bool = True, **kwargs
    ) -> BaseModelOutputWithPooling | tuple:
        """Run every layer. `hidden_states` (when requested) has `num_hidden_layers + 1` entries of `(B*T, N, D)`;
        `pooler_output` is the post-LayerNorm CLS, averaged over frames for videos: `(B, D)`."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        batch = pixel_values.shape[0]
        hidden_states, num_frames = self._embed(pixel_values)
        all_hidden = [hidden_states]
        for encoder_layer in self.encoder.layers:
            hidden_states = encoder_layer(hidden_states, num_frames=num_frames)
            all_hidden.append(hidden_states)
        pooled = self.post_layernorm(hidden_states[:, 0])  # (B*T, D)
        if pixel_values.ndim == 5:
            pooled = pooled.view(batch, -1, pooled.shape[-1]).mean(1)  # (B*T, D) -> (B, D)
        output = BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["LanguageBindVisionModel", "LanguageBindPreTrainedModel"]
