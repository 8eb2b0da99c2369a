"""AppendCache / AppendLayer: the same states as transformers' DynamicLayer through appends, regrowth, crop and batch
reordering, and greedy generation token-identical to DynamicCache and to the built-in VideoLlava."""

import torch
from transformers import DynamicCache, LlamaConfig, MistralConfig
from transformers.cache_utils import DynamicLayer

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from modeling_videollava.kv_cache import AppendCache, AppendLayer
from tests.modeling_videollava.helpers import mixed_batch
from tests.tiny import tiny_config


def states(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 2, length, 4), torch.randn(batch, 2, length, 4)  # (B, H, S, D)


def assert_same(ours: AppendLayer, reference: DynamicLayer) -> None:
    assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)
    assert ours.get_seq_length() == reference.get_seq_length()


def test_append_layer_matches_dynamic_layer_through_regrowth_crop_and_reorder():
    torch.manual_seed(0)
    ours, reference = AppendLayer(headroom=2), DynamicLayer()
    for step, length in enumerate([5, 1, 1, 1, 1, 3]):  # prefill, decode steps past the headroom, a 3-token chunk
        new = states(3, length)
        got, expected = ours.update(*new), reference.update(*new)
        assert all(torch.equal(g, e) for g, e in zip(got, expected)), f"step {step}"
    assert ours.key_buffer.shape[-2] >= ours.get_seq_length() == 12
    buffer = ours.key_buffer
    ours.update(*states(3, 0))  # an empty update keeps the buffer
    assert ours.key_buffer is buffer
    for layer in (ours, reference):
        layer.crop(-4)
    new = states(3, 2)
    ours.update(*new), reference.update(*new)
    assert_same(ours, reference)
    assert ours.key_buffer is buffer  # the crop is a view of the same buffer: the append wrote in place
    beams = torch.tensor([2, 0, 0])
    for layer in (ours, reference):
        layer.reorder_cache(beams)
    new = states(3, 1)
    ours.update(*new), reference.update(*new)
    assert_same(ours, reference)
    for layer in (ours, reference):
        layer.batch_select_indices(torch.tensor([1, 2]))
    new = states(2, 1)
    ours.update(*new), reference.update(*new)
    assert_same(ours, reference)
    ours.reset()
    assert ours.get_seq_length() == 0 and ours.key_buffer is None


def test_fits_only_full_attention_decoders():
    assert AppendCache.fits(LlamaConfig())
    assert not AppendCache.fits(MistralConfig(sliding_window=16))
    assert not AppendCache.fits(LlamaConfig(layer_types=["full_attention", "sliding_attention"], num_hidden_layers=2))


def test_greedy_generation_with_append_cache_equals_dynamic_cache_on_a_left_padded_batch():
    torch.manual_seed(0)
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    batch = mixed_batch(model.config, padding_side="left")
    new = dict(max_new_tokens=300, min_new_tokens=300, do_sample=False)  # past the 256 headroom: one regrowth
    with torch.no_grad():
        out = model.generate(**batch, **new, return_dict_in_generate=True)
        reference = model.generate(**batch, **new, past_key_values=DynamicCache(config=model.config.text_config))
    assert isinstance(out.past_key_values, AppendCache)
    assert out.past_key_values.layers[0].key_buffer.shape[-2] > batch["input_ids"].shape[1] + 256  # it regrew
    assert torch.equal(out.sequences, reference)
    with torch.no_grad():
        dynamic = model.generate(**batch, max_new_tokens=2, do_sample=False, cache_implementation="dynamic",
                                 return_dict_in_generate=True)
    assert type(dynamic.past_key_values) is DynamicCache  # a cache the call names is left alone
