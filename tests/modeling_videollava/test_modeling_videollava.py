"""LanguageBindVideoLlavaForConditionalGeneration: parity with transformers' built-in class, merging, generation."""

import argparse

import pytest
import torch

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from modeling_videollava.convert import convert
from tests.modeling_videollava.helpers import mixed_batch, tiny_hf_model
from tests.tiny import tiny_config


def convert_args(**kwargs) -> argparse.Namespace:
    base = dict(source=None, to="ours", image_tower=None, video_tower=None, tokenizer=None, num_frames=2,
                tower_hidden_act=None, video_feature_select="cls_patch", dtype="keep", max_shard_size="5GB")
    return argparse.Namespace(**{**base, **kwargs})


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    torch.manual_seed(0)
    hf = tiny_hf_model()
    src, dst = tmp_path_factory.mktemp("hf"), tmp_path_factory.mktemp("ours")
    hf.save_pretrained(src)
    convert(convert_args(source="hf", input=str(src), output=str(dst)))
    ours = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(dst).eval()
    return hf, ours


def test_logits_match_builtin_videollava_on_mixed_batch(hf_and_ours):
    hf, ours = hf_and_ours
    assert ours.config.video_config.add_time_attn is False
    batch = mixed_batch(ours.config)
    with torch.no_grad():
        expected = hf(**batch).logits
        got = ours(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (got[mask] - expected[mask]).abs().max() <= 1e-5


def test_greedy_generation_matches_builtin_videollava_on_a_left_padded_batch(hf_and_ours):
    hf, ours = hf_and_ours
    batch = mixed_batch(ours.config, padding_side="left")
    new = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        expected = hf.generate(**batch, **new)  # transformers' DynamicCache
        got = ours.generate(**batch, **new, return_dict_in_generate=True)  # our AppendCache
    assert type(got.past_key_values).__name__ == "AppendCache"
    assert torch.equal(got.sequences, expected)


def test_batched_greedy_generation_equals_rows_alone(hf_and_ours):
    _, model = hf_and_ours
    batch = mixed_batch(model.config)
    rows = [(0, 1, 0), (1, 0, 1), (2, 1, 1), (3, 0, 0)]  # (row, images, videos)
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
        img_i = vid_i = 0
        for row, n_img, n_vid in rows:
            keep = batch["attention_mask"][row].bool()
            alone = model.generate(
                input_ids=batch["input_ids"][row, keep][None],
                pixel_values=batch["pixel_values"][img_i:img_i + n_img] if n_img else None,
                pixel_values_videos=batch["pixel_values_videos"][vid_i:vid_i + n_vid] if n_vid else None,
                max_new_tokens=6,
                do_sample=False,
            )[0, keep.sum():]
            img_i, vid_i = img_i + n_img, vid_i + n_vid
            assert together[row, : len(alone)].tolist() == alone.tolist(), f"row {row}"
            assert (together[row, len(alone):] == model.generation_config.pad_token_id).all()


def test_cached_and_uncached_generation_agree():
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    batch = mixed_batch(model.config)
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_placeholder_feature_mismatch_names_both_counts():
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    batch = mixed_batch(model.config)
    with pytest.raises(ValueError, match=r"8 <image> placeholder tokens in input_ids, 4 feature rows \(1 images x 4"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:1]})
    with pytest.raises(ValueError, match=r"20 <video> placeholder tokens in input_ids, 0 feature rows"):
        model(**{**batch, "pixel_values_videos": None})


def test_video_feature_layouts_and_training_step():
    cls_model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    patch_model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config(video_feature_select="patch"))
    videos = torch.randn(2, 2, 3, 28, 28)
    assert cls_model.get_video_features(videos).shape == (2, 2 * 5, 32)
    assert patch_model.get_video_features(videos).shape == (2, 2 * 4, 32)
    assert patch_model.config.video_seq_length == 8
    cls_model.train()
    cls_model.gradient_checkpointing_enable()
    batch = mixed_batch(cls_model.config, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = cls_model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert cls_model.model.multi_modal_projector.linear_1.weight.grad is not None
    assert cls_model.model.video_tower.encoder.layers[0].temporal_attn.q_proj.weight.grad is not None


def test_eager_matches_sdpa_for_the_whole_model():
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    batch = mixed_batch(model.config)
    with torch.no_grad():
        sdpa = model(**batch).logits
        model.set_attn_implementation("eager")
        eager = model(**batch).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(eager[mask], sdpa[mask], atol=1e-5, rtol=1e-5)


def test_no_split_modules_are_all_findable_for_fsdp_auto_wrap():
    from accelerate.utils.dataclasses import get_module_class_from_name

    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config())
    assert set(model._no_split_modules) == {"LanguageBindEncoderLayer", "LanguageBindVisionEmbeddings",
                                            "LlamaDecoderLayer"}
    for name in model._no_split_modules:
        assert get_module_class_from_name(model, name) is not None, name


def test_run_unused_towers_gives_every_tower_a_gradient_without_changing_the_loss():
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config(run_unused_towers=True)).train()
    batch = mixed_batch(model.config, padding_side="right")
    text_only = {"input_ids": batch["input_ids"][3:], "attention_mask": batch["attention_mask"][3:]}
    labels = text_only["input_ids"].masked_fill(text_only["attention_mask"] == 0, -100)
    loss = model(**text_only, labels=labels).loss
    loss.backward()
    for tower in (model.model.image_tower, model.model.video_tower):
        grad = tower.encoder.layers[0].self_attn.q_proj.weight.grad
        assert grad is not None and not grad.any()  # touched (same parameters on every rank), but unchanged
    model.config.run_unused_towers = False
    torch.testing.assert_close(model(**text_only, labels=labels).loss, loss)
