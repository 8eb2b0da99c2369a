"""MAE pretraining of the separated image tower: masking, loss, and the saved folder through `videollava convert`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration, LanguageBindVisionConfig
from modeling_videollava.modeling_languagebind import LanguageBindVisionModel
from tests.modeling_videollava.test_convert import LLM, random_llama, write_tokenizer
from training.mae import (
    MaeConfig,
    MaskedAutoencoder,
    image_tower_config,
    masked_mse,
    patchify,
    pretrain_mae,
    random_masking,
)


# 32 px images, 8 px patches -> 16 patches, as the default model's 64/16
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 32, "patch_size": 8}


def write_images(folder, count: int = 6) -> list:
    """Coloured rectangles on black, the kind of image the shapes data has."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        array = np.zeros((32, 32, 3), dtype=np.uint8)
        top, left = rng.integers(0, 16, size=2)
        array[top : top + 14, left : left + 14] = rng.integers(0, 256, size=3)
        paths.append(folder / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    return paths


def test_masking_hides_the_ratio_and_keeps_the_rest():
    keep, mask = random_masking(5, 16, 0.75, torch.Generator().manual_seed(0))
    assert keep.shape == (5, 4) and mask.shape == (5, 16)
    assert mask.float().mean(1).tolist() == [0.75] * 5
    for row in range(5):
        assert not mask[row, keep[row]].any() and mask[row].sum() == 16 - len(set(keep[row].tolist()))
    assert not torch.equal(mask[0], mask[1])  # per-sample masks
    with pytest.raises(ValueError, match="mask_ratio=1.0"):
        random_masking(1, 16, 1.0)


def test_unmasked_patches_do_not_enter_the_loss():
    pred, target = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    _, mask = random_masking(2, 16, 0.75, torch.Generator().manual_seed(1))
    changed = target.clone()
    changed[~mask] += 10.0
    assert torch.equal(masked_mse(pred, target, mask), masked_mse(pred, changed, mask))
    changed[mask] += 1.0
    assert masked_mse(pred, changed, mask) != masked_mse(pred, target, mask)
    assert torch.allclose(masked_mse(pred, target, mask), (pred - target)[mask].pow(2).mean())


def test_encoder_sees_only_the_visible_patches():
    config = image_tower_config(TINY)
    model = MaskedAutoencoder(LanguageBindVisionModel(config), 16, 1).eval()
    pixels = torch.randn(2, 3, 32, 32)
    keep, mask = random_masking(2, config.num_patches, 0.75, torch.Generator().manual_seed(2))
    other = patchify(pixels, 8).clone()
    other[mask] = torch.randn_like(other[mask])  # new content in every masked patch only
    # (B, N, p*p*C) -> (B, h, w, p, p, C) -> (B, C, h, p, w, p) -> (B, C, H, W)
    other = other.view(2, 4, 4, 8, 8, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 32, 32)
    assert torch.equal(patchify(other, 8)[~mask], patchify(pixels, 8)[~mask])
    with torch.no_grad():
        latent = model.encode_visible(pixels, keep)
        assert latent.shape == (2, 1 + 4, 32)
        torch.testing.assert_close(latent, model.encode_visible(other, keep))
        loss, pred = model(pixels, keep, mask)
    assert pred.shape == (2, 16, 8 * 8 * 3) and loss.ndim == 0


def test_loss_falls_and_folder_converts_as_the_image_tower(tmp_path):
    from videollava.cli import main

    paths = write_images(tmp_path / "images")
    report = pretrain_mae(paths, TINY, tmp_path / "mae", MaeConfig(steps=60, batch_size=6, lr=3e-3, seed=0))
    assert report["loss_last"] < 0.7 * report["loss_first"], report
    assert json.loads((tmp_path / "mae" / "mae_report.json").read_text())["steps"] == 60
    trained = load_file(tmp_path / "mae" / "model.safetensors")
    assert trained and all(k.startswith("vision_model.") for k in trained)
    torch.manual_seed(0)
    fresh = LanguageBindVisionModel(image_tower_config(TINY)).state_dict()
    fc1 = "encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(trained[f"vision_model.{fc1}"], fresh[fc1])  # training moved the tower

    video = LanguageBindVisionModel(LanguageBindVisionConfig(**TINY, add_time_attn=True, num_frames=2))
    (tmp_path / "video").mkdir()
    save_file({f"vision_model.{k}": v.contiguous() for k, v in video.state_dict().items()}
              | {"logit_scale": torch.ones(()), "text_projection.weight": torch.zeros(4, 32)},
              tmp_path / "video" / "model.safetensors")
    (tmp_path / "video" / "config.json").write_text(json.dumps(
        {"model_type": "LanguageBindVideo", "vision_config": video.config.to_dict()}))
    llm = tmp_path / "llm"
    llm.mkdir()
    save_file({k: v for k, v in random_llama().items() if "inv_freq" not in k}, llm / "model.safetensors")
    (llm / "config.json").write_text(json.dumps(dict(LLM, model_type="llama", architectures=["LlamaForCausalLM"])))
    write_tokenizer(llm)
    assert main(["convert", "--from", "languagebind", "--image-tower", str(tmp_path / "mae"), "--video-tower",
                 str(tmp_path / "video"), "--input", str(llm), "--output", str(tmp_path / "out"),
                 "--num-frames", "2"]) == 0

    model = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(tmp_path / "out")
    image = model.model.image_tower.state_dict()
    assert set(image) == {k.removeprefix("vision_model.") for k in trained}
    for key, value in trained.items():
        torch.testing.assert_close(image[key.removeprefix("vision_model.")], value, rtol=0, atol=0)
    assert model.config.image_config.hidden_size == 32 and not model.config.image_config.add_time_attn
    torch.testing.assert_close(model.model.video_tower.encoder.layers[0].temporal_embedding,
                               video.encoder.layers[0].temporal_embedding)


def test_a_temporal_tower_config_is_refused():
    with pytest.raises(ValueError, match="add_time_attn=True"):
        image_tower_config(dict(TINY, add_time_attn=True))
