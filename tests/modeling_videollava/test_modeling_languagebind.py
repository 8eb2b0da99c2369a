"""The LanguageBind towers against references: transformers' CLIPVisionModel (spatial path) and SPEC §2.2's
temporal equations, written out here independently with explicit per-position loops."""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from modeling_videollava import LanguageBindVisionConfig, LanguageBindVisionModel


TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=28,
             patch_size=14, hidden_act="gelu")


def video_tower(num_frames: int = 4, **kwargs) -> LanguageBindVisionModel:
    config = LanguageBindVisionConfig(**TOWER, num_frames=num_frames, add_time_attn=True, **kwargs)
    tower = LanguageBindVisionModel(config).eval()
    with torch.no_grad():  # non-trivial temporal weights (the fresh init of norms / biases is too symmetric)
        for layer in tower.encoder.layers:
            layer.temporal_embedding.normal_(std=0.5)
            layer.temporal_layer_norm1.weight.normal_(1.0, 0.2)
    return tower


def reference_attention(x: torch.Tensor, attn, heads: int) -> torch.Tensor:
    """CLIPAttention on one sequence x (S, D), written from the equations."""
    s, d = x.shape
    q = attn.q_proj(x).view(s, heads, -1).transpose(0, 1)
    k = attn.k_proj(x).view(s, heads, -1).transpose(0, 1)
    v = attn.v_proj(x).view(s, heads, -1).transpose(0, 1)
    w = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
    return attn.out_proj((w @ v).transpose(0, 1).reshape(s, d))


def reference_layer(layer, h: torch.Tensor, b: int, t: int, heads: int) -> torch.Tensor:
    """SPEC §2.2 layer forward on h (B*T, N, D), rows ordered (b, t)."""
    h = h.clone()
    n = h.shape[1]
    for bi in range(b):
        for ti in range(t):
            h[bi * t + ti] += layer.temporal_embedding[0, ti]
    out = h.clone()
    for bi in range(b):
        for pos in range(n):
            seq = torch.stack([h[bi * t + ti, pos] for ti in range(t)])  # (T, D): one spatial position over time
            upd = reference_attention(layer.temporal_layer_norm1(seq), layer.temporal_attn, heads)
            for ti in range(t):
                out[bi * t + ti, pos] = h[bi * t + ti, pos] + upd[ti]
    x = out
    for i in range(x.shape[0]):
        x[i] = x[i] + reference_attention(layer.layer_norm1(x[i]), layer.self_attn, heads)
    return x + layer.mlp.fc2(torch.nn.functional.gelu(layer.mlp.fc1(layer.layer_norm2(x))))


def test_image_tower_equals_clip_vision_model():
    clip = CLIPVisionModel(CLIPVisionConfig(**TOWER)).eval()
    ours = LanguageBindVisionModel(LanguageBindVisionConfig(**TOWER, num_frames=1)).eval()
    missing, unexpected = ours.load_state_dict(clip.state_dict(), strict=True)
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        expected = clip(pixels, output_hidden_states=True)
        got = ours(pixels, output_hidden_states=True)
        partial = ours.hidden_state(pixels, -2)
    assert len(got.hidden_states) == len(expected.hidden_states) == 4
    for a, b in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(partial, expected.hidden_states[-2], atol=1e-5, rtol=1e-5)


def test_temporal_path_matches_spec_equations():
    b, t = 2, 4
    tower = video_tower(num_frames=t)
    pixels = torch.randn(b, t, 3, 28, 28)
    with torch.no_grad():
        got = tower(pixels, output_hidden_states=True).hidden_states
        h = tower.pre_layrnorm(tower.embeddings(pixels.flatten(0, 1)))
        torch.testing.assert_close(got[0], h)
        for i, layer in enumerate(tower.encoder.layers):
            h = reference_layer(layer, h, b, t, heads=4)
            torch.testing.assert_close(got[i + 1], h, atol=1e-5, rtol=1e-4)


def test_temporal_attention_mixes_frames_and_zeroed_temporal_part_is_spatial_only():
    tower = video_tower(num_frames=4)
    pixels = torch.randn(1, 4, 3, 28, 28)
    with torch.no_grad():
        base = tower.hidden_state(pixels, -1)
        changed = pixels.clone()
        changed[0, 3] = torch.randn(3, 28, 28)
        # frame 0's features depend on frame 3 only through temporal attention
        assert not torch.allclose(tower.hidden_state(changed, -1)[0], base[0])
        for layer in tower.encoder.layers:
            layer.temporal_embedding.zero_()
            layer.temporal_attn.out_proj.weight.zero_()
            layer.temporal_attn.out_proj.bias.zero_()
        spatial = LanguageBindVisionModel(LanguageBindVisionConfig(**TOWER, num_frames=1)).eval()
        spatial.load_state_dict(tower.state_dict(), strict=False)
        torch.testing.assert_close(tower.hidden_state(pixels, -1), spatial.hidden_state(pixels[0], -1))


def test_frame_count_mismatch_raises_unless_interpolation_opted_in():
    tower = video_tower(num_frames=4)
    with pytest.raises(ValueError, match="trained on 4 frames per video but got 3"):
        tower(torch.randn(1, 3, 3, 28, 28))
    tower.config.interpolate_temporal_embedding = True
    with torch.no_grad():
        assert tower(torch.randn(1, 3, 3, 28, 28)).last_hidden_state.shape == (3, 5, 32)
        # interpolating to the trained count is the identity
        layer = tower.encoder.layers[0]
        torch.testing.assert_close(layer.temporal_embedding_for(4), layer.temporal_embedding)


def test_eager_and_sdpa_agree_and_gradient_checkpointing_backward():
    tower = video_tower(num_frames=2)
    pixels = torch.randn(2, 2, 3, 28, 28)
    with torch.no_grad():
        sdpa = tower.hidden_state(pixels, -2)
        tower.set_attn_implementation("eager")
        torch.testing.assert_close(tower.hidden_state(pixels, -2), sdpa, atol=1e-5, rtol=1e-5)
    tower.train()
    tower.gradient_checkpointing_enable()
    tower.hidden_state(pixels, -1).sum().backward()
    assert tower.encoder.layers[0].temporal_embedding.grad is not None
