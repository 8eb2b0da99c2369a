"""Builders shared by the model tests: tiny built-in VideoLlava models and mixed batches."""

import torch
from transformers import VideoLlavaConfig as HFVideoLlavaConfig
from transformers import VideoLlavaForConditionalGeneration as HFVideoLlava

from tests.tiny import tiny_config, tiny_tokenizer


def tiny_hf_model() -> HFVideoLlava:
    """transformers' built-in VideoLlava with the towers and LLM of `tests.tiny.tiny_config`."""
    ours = tiny_config(add_time_attn=False)
    vision = {k: v for k, v in ours.image_config.to_dict().items() if k in
              ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
               "patch_size", "hidden_act")}
    config = HFVideoLlavaConfig(
        vision_config=dict(vision, model_type="clip_vision_model"),
        text_config=ours.text_config.to_dict(),
        image_token_index=ours.image_token_id,
        video_token_index=ours.video_token_id,
        image_seq_length=ours.image_seq_length,
        video_seq_length=ours.video_seq_length,
    )
    return HFVideoLlava(config).eval()


def mixed_batch(config, padding_side: str = "left") -> dict[str, torch.Tensor]:
    """Four rows: image only, video only, image + video, text only; padded with the tokenizer's pad id."""
    tok = tiny_tokenizer()
    img, vid = [config.image_token_id] * config.image_seq_length, [config.video_token_id] * config.video_seq_length
    words = tok("what is in this video ?", add_special_tokens=False).input_ids
    rows = [
        [1, *img, *words],
        [1, *vid, *words, *words],
        [1, *vid, *words, *img, *words[:2]],
        [1, *words, *words, *words],
    ]
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(longest - len(row), longest) if padding_side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row), 1
    t, size = config.video_config.num_frames, config.image_config.image_size
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=torch.randn(2, 3, size, size),
        pixel_values_videos=torch.randn(2, t, 3, size, size),
    )
