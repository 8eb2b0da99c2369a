"""The converter on tiny look-alike checkpoints with the original key layouts: strict both ways."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import VideoLlavaForConditionalGeneration as HFVideoLlava

from modeling_videollava import LanguageBindVisionConfig, LanguageBindVideoLlavaForConditionalGeneration
from modeling_videollava.convert import ConversionError, convert
from tests.modeling_videollava.helpers import mixed_batch
from tests.modeling_videollava.test_modeling_languagebind import TOWER, reference_layer
from tests.modeling_videollava.test_modeling_videollava import convert_args
from tests.tiny import WORDS, tiny_config


LLM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=64, max_position_embeddings=512)


def random_tower(prefix: str, temporal: bool, frames: int = 2) -> dict[str, torch.Tensor]:
    d, f = TOWER["hidden_size"], TOWER["intermediate_size"]
    sd = {f"{prefix}embeddings.class_embedding": torch.randn(d),
          f"{prefix}embeddings.patch_embedding.weight": torch.randn(d, 3, 14, 14) * 0.02,
          f"{prefix}embeddings.position_embedding.weight": torch.randn(5, d) * 0.02,
          f"{prefix}embeddings.position_ids": torch.arange(5)[None]}
    for norm in ("pre_layrnorm", "post_layernorm"):
        sd |= {f"{prefix}{norm}.weight": 1 + 0.1 * torch.randn(d), f"{prefix}{norm}.bias": 0.1 * torch.randn(d)}
    for i in range(TOWER["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{i}."
        attns = ["self_attn"] + (["temporal_attn"] if temporal else [])
        for a in attns:
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                sd |= {f"{p}{a}.{proj}.weight": torch.randn(d, d) * 0.1, f"{p}{a}.{proj}.bias": torch.randn(d) * 0.1}
        norms = ["layer_norm1", "layer_norm2"] + (["temporal_layer_norm1"] if temporal else [])
        for n in norms:
            sd |= {f"{p}{n}.weight": 1 + 0.1 * torch.randn(d), f"{p}{n}.bias": 0.1 * torch.randn(d)}
        sd |= {f"{p}mlp.fc1.weight": torch.randn(f, d) * 0.1, f"{p}mlp.fc1.bias": torch.randn(f) * 0.1,
               f"{p}mlp.fc2.weight": torch.randn(d, f) * 0.1, f"{p}mlp.fc2.bias": torch.randn(d) * 0.1}
        if temporal:
            sd[f"{p}temporal_embedding"] = torch.randn(1, frames, d) * 0.5
    return sd


def random_llama(prefix: str = "model.") -> dict[str, torch.Tensor]:
    d, f, v, kv = LLM["hidden_size"], LLM["intermediate_size"], LLM["vocab_size"], 16
    sd = {f"{prefix}embed_tokens.weight": torch.randn(v, d), f"{prefix}norm.weight": torch.ones(d),
          "lm_head.weight": torch.randn(v, d)}
    for i in range(LLM["num_hidden_layers"]):
        p = f"{prefix}layers.{i}."
        sd |= {f"{p}self_attn.q_proj.weight": torch.randn(d, d), f"{p}self_attn.k_proj.weight": torch.randn(kv, d),
               f"{p}self_attn.v_proj.weight": torch.randn(kv, d), f"{p}self_attn.o_proj.weight": torch.randn(d, d),
               f"{p}self_attn.rotary_emb.inv_freq": torch.randn(4), f"{p}mlp.gate_proj.weight": torch.randn(f, d),
               f"{p}mlp.up_proj.weight": torch.randn(f, d), f"{p}mlp.down_proj.weight": torch.randn(d, f),
               f"{p}input_layernorm.weight": torch.ones(d), f"{p}post_attention_layernorm.weight": torch.ones(d)}
    return sd


def write_tokenizer(folder) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", *sorted(set(WORDS))]
    words += [f"word{i}" for i in range(LLM["vocab_size"] - len(words))]  # a full vocabulary, like Vicuna's 32000
    vocab = {w: i for i, w in enumerate(words[: LLM["vocab_size"]])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=2048).save_pretrained(folder)


@pytest.fixture
def original_checkpoint(tmp_path):
    """A Video-LLaVA-7B look-alike: LlavaLlamaForCausalLM keys, two .bin shards, 32000-style vocab (here 64)."""
    sd = random_llama() | random_tower("model.image_tower.image_tower.", temporal=False)
    sd |= random_tower("model.video_tower.video_tower.", temporal=True)
    sd |= {"model.mm_projector.0.weight": torch.randn(32, 32) * 0.1, "model.mm_projector.0.bias": torch.zeros(32),
           "model.mm_projector.2.weight": torch.randn(32, 32) * 0.1, "model.mm_projector.2.bias": torch.zeros(32)}
    keys = sorted(sd)
    torch.save({k: sd[k] for k in keys[: len(keys) // 2]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({k: sd[k] for k in keys[len(keys) // 2:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    config = dict(LLM, architectures=["LlavaLlamaForCausalLM"], model_type="llava", mm_hidden_size=32,
                  mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_projector_type="mlp2x_gelu",
                  image_aspect_ratio="pad", rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    write_tokenizer(tmp_path)
    return tmp_path, sd


def tower_overrides(out) -> None:
    """The look-alike's towers are tiny: patch the converted config (real ones use the ViT-L/14 defaults)."""
    cfg = json.loads((out / "config.json").read_text())
    for key in ("image_config", "video_config"):
        cfg[key].update(TOWER)
    (out / "config.json").write_text(json.dumps(cfg))


def test_original_layout_converts_strictly_and_reproduces_the_towers(original_checkpoint, tmp_path, monkeypatch):
    src, sd = original_checkpoint
    monkeypatch.setattr("modeling_videollava.convert.LanguageBindVisionConfig",
                        lambda **kw: LanguageBindVisionConfig(**{**TOWER, **kw}))
    out = convert(convert_args(source="original", input=str(src), output=str(tmp_path / "out"), tower_hidden_act="gelu"))
    model = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(out).eval()
    cfg = model.config
    assert cfg.video_config.add_time_attn and cfg.video_config.num_frames == 2
    assert (cfg.image_token_id, cfg.video_token_id, cfg.text_config.vocab_size) == (64, 65, 128)
    # every original tensor arrived: the temporal ones included
    layer = model.model.video_tower.encoder.layers[1]
    torch.testing.assert_close(layer.temporal_attn.k_proj.weight, sd["model.video_tower.video_tower.encoder.layers.1.temporal_attn.k_proj.weight"])
    torch.testing.assert_close(model.model.multi_modal_projector.linear_2.weight, sd["model.mm_projector.2.weight"])
    torch.testing.assert_close(model.lm_head.weight[:64], sd["lm_head.weight"])
    # the tower output equals SPEC §2.2's equations evaluated on the original tensors
    pixels = torch.randn(1, 2, 3, 28, 28)
    with torch.no_grad():
        got = model.model.video_tower.hidden_state(pixels, -2)
        tower = model.model.video_tower
        h = tower.pre_layrnorm(tower.embeddings(pixels.flatten(0, 1)))
        for lay in tower.encoder.layers[:-1]:
            h = reference_layer(lay, h, 1, 2, heads=4)
    torch.testing.assert_close(got, h, atol=1e-5, rtol=1e-4)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    assert tok.convert_tokens_to_ids(["<image>", "<video>", "<pad>"]) == [64, 65, 66]
    assert tok.padding_side == "left"


def test_missing_and_unexpected_keys_are_listed(original_checkpoint, tmp_path, monkeypatch):
    src, sd = original_checkpoint
    monkeypatch.setattr("modeling_videollava.convert.LanguageBindVisionConfig",
                        lambda **kw: LanguageBindVisionConfig(**{**TOWER, **kw}))
    for f in src.glob("*.bin"):
        f.unlink()
    sd = dict(sd)
    sd.pop("model.video_tower.video_tower.encoder.layers.0.temporal_embedding")
    sd["model.some_new_module.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in sd.items()}, src / "model.safetensors")
    with pytest.raises(ConversionError, match="model.some_new_module.weight"):
        convert(convert_args(source="original", input=str(src), output=str(tmp_path / "a"), tower_hidden_act="gelu"))
    sd.pop("model.some_new_module.weight")
    save_file({k: v.contiguous() for k, v in sd.items()}, src / "model.safetensors")
    with pytest.raises(ConversionError, match=r"missing 1: model.video_tower.encoder.layers.0.temporal_embedding"):
        convert(convert_args(source="original", input=str(src), output=str(tmp_path / "b"), tower_hidden_act="gelu"))


def test_languagebind_towers_and_llm_build_a_model(tmp_path):
    for name, temporal in (("image", False), ("video", True)):
        folder = tmp_path / name
        folder.mkdir()
        tower = random_tower("vision_model.", temporal=temporal)
        tower |= {"text_model.embeddings.token_embedding.weight": torch.zeros(3, 4), "logit_scale": torch.ones(()),
                  "visual_projection.weight": torch.zeros(4, 32), "text_projection.weight": torch.zeros(4, 32)}
        save_file(tower, folder / "model.safetensors")
        vision = dict(TOWER, add_time_attn=temporal, num_frames=2 if temporal else 1, lora_r=0)
        (folder / "config.json").write_text(json.dumps({"model_type": "LanguageBindVideo", "vision_config": vision}))
    llm = tmp_path / "llm"
    llm.mkdir()
    save_file({k: v for k, v in random_llama().items() if "inv_freq" not in k}, llm / "model.safetensors")
    (llm / "config.json").write_text(json.dumps(dict(LLM, model_type="llama", architectures=["LlamaForCausalLM"])))
    write_tokenizer(llm)
    out = convert(convert_args(source="languagebind", input=str(llm), image_tower=str(tmp_path / "image"),
                               video_tower=str(tmp_path / "video"), output=str(tmp_path / "out")))
    model = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(out)
    assert model.config.video_config.add_time_attn and not model.config.image_config.add_time_attn
    assert model.model.multi_modal_projector.linear_1.weight.abs().sum() > 0


def test_export_to_builtin_layout_round_trips(tmp_path):
    ours = LanguageBindVideoLlavaForConditionalGeneration(tiny_config(add_time_attn=False)).eval()
    ours.save_pretrained(tmp_path / "ours")
    convert(convert_args(to="hf", input=str(tmp_path / "ours"), output=str(tmp_path / "hf")))
    hf = HFVideoLlava.from_pretrained(tmp_path / "hf").eval()
    batch = mixed_batch(ours.config)
    with torch.no_grad():
        diff = (hf(**batch).logits - ours(**batch).logits)[batch["attention_mask"].bool()].abs().max()
    assert diff <= 1e-5
    temporal = LanguageBindVideoLlavaForConditionalGeneration(tiny_config())
    temporal.save_pretrained(tmp_path / "temporal")
    with pytest.raises(ConversionError, match="temporal attention"):
        convert(convert_args(to="hf", input=str(tmp_path / "temporal"), output=str(tmp_path / "x")))


def test_convert_command_line(tmp_path, caplog):
    from tests.modeling_videollava.helpers import tiny_hf_model
    from videollava.cli import main

    from processing import LanguageBindVideoLlavaProcessor
    from tests.tiny import tiny_tokenizer

    tiny_hf_model().save_pretrained(tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", "hf", "--input", str(tmp_path / "hf"), "--output", str(tmp_path / "out"),
                 "--num-frames", "2"]) == 0
    assert "add_time_attn=False" in caplog.text
    assert (tmp_path / "out" / "modeling_languagebind.py").is_file()
    processor = LanguageBindVideoLlavaProcessor.from_pretrained(tmp_path / "out", trust_remote_code=True)  # model + processor
    assert (processor.num_frames, processor.video_token_id) == (2, tiny_tokenizer().convert_tokens_to_ids("<video>"))
    assert main(["convert", "--from", "original", "--input", str(tmp_path / "nowhere"), "--output",
                 str(tmp_path / "x")]) == 1
    assert "No config.json in" in caplog.text


def _tied_hf_model():
    from tests.modeling_videollava.helpers import tiny_hf_model

    config = tiny_hf_model().config
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    model = HFVideoLlava(config).eval()
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    return model


def _assert_converted_equals(hf, out):
    """Every written key read back: exactly the expected set, and the model built from them equals the source."""
    from safetensors import safe_open

    from modeling_videollava.checkpoint_io import expected_shapes

    ours, info = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    written = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            written |= {k: f.get_tensor(k) for k in f.keys()}
    assert set(written) == set(expected_shapes(ours.config)) and not info["missing_keys"]
    for key, value in written.items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)
    torch.testing.assert_close(ours.lm_head.weight, hf.lm_head.weight, rtol=0, atol=0)
    batch = mixed_batch(ours.config)
    with torch.no_grad():
        diff = (hf(**batch).logits - ours.eval()(**batch).logits)[batch["attention_mask"].bool()].abs().max()
    assert diff <= 1e-5
    return ours


def test_tied_checkpoint_saved_by_transformers_keeps_its_head(tmp_path, caplog):
    """Defect 1: `save_pretrained` of a tied model stores no lm_head; the tie must be recorded, not lost."""
    from tests.tiny import tiny_tokenizer
    from videollava.cli import main

    caplog.set_level("INFO")
    hf = _tied_hf_model()
    hf.save_pretrained(tmp_path / "tied")
    tiny_tokenizer().save_pretrained(tmp_path / "tied")
    assert main(["convert", "--from", "hf", "--input", str(tmp_path / "tied"), "--output", str(tmp_path / "out"),
                 "--num-frames", "2"]) == 0
    ours = _assert_converted_equals(hf, tmp_path / "out")
    assert ours.config.tie_word_embeddings and ours.lm_head.weight is ours.model.language_model.embed_tokens.weight
    assert "tied to embed_tokens" in caplog.text


def test_bin_checkpoint_with_shared_storage_writes_both_tensors(tmp_path):
    """Defect 1: an older `pytorch_model.bin` of a tied model holds lm_head and embed_tokens in one storage;
    `save_pretrained(state_dict=...)` used to drop lm_head silently (random on load). Here the config does not
    declare the tie, so both tensors must be written."""
    from safetensors.torch import load_file

    from tests.tiny import tiny_tokenizer
    from videollava.cli import main

    hf = _tied_hf_model()
    hf.save_pretrained(tmp_path / "src")
    legacy = load_file(tmp_path / "src" / "model.safetensors")  # transformers' on-disk (original) key names
    legacy["language_model.lm_head.weight"] = legacy["language_model.model.embed_tokens.weight"]  # one storage
    (tmp_path / "src" / "model.safetensors").unlink()
    torch.save(legacy, tmp_path / "src" / "pytorch_model.bin")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = False
    (tmp_path / "src" / "config.json").write_text(json.dumps(config))
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    assert main(["convert", "--from", "hf", "--input", str(tmp_path / "src"), "--output", str(tmp_path / "out"),
                 "--num-frames", "2"]) == 0
    ours = _assert_converted_equals(hf, tmp_path / "out")
    assert not ours.config.tie_word_embeddings
    assert "lm_head.weight" in load_file(tmp_path / "out" / "model.safetensors")
