"""QLoRA: `--load_4bit true --train_language_model lora` trains 2 steps on the 4-bit LLM; the saved adapter (LoRA on
the LLM + the fully trained projector) reloads on the full-precision and on the 4-bit base; the merged model loads."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.training.fakes import save_tiny_model, write_llava_json
from training.arguments import parse_args
from training.cli import train

pytest.importorskip("bitsandbytes", reason="needs the [quant] extra (CI installs it)")


def _argv(data: str, base: str, out: str, *extra: str) -> list[str]:
    return ["--config", "training/configs/tiny_cpu.yaml", "--dataset", f"{data}/train.json", "--image_folder",
            f"{data}/images", "--video_folder", f"{data}/videos", "--output_dir", out, "--disable_tqdm", "true",
            "--save_strategy", "no", "--model_name_or_path", base, "--load_4bit", "true", "--train_language_model",
            "lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0", "--learning_rate", "1e-2",
            "--max_steps", "2", *extra]


def test_qlora_trains_two_steps_and_its_adapter_reloads(tmp_path):
    from peft import PeftModel

    from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
    from training.stages import load_4bit_model

    data = str(tmp_path / "data")
    write_llava_json(data, n=8)
    base = save_tiny_model(str(tmp_path / "base"))
    result = train(*parse_args(_argv(data, base, str(tmp_path / "out"))))
    model = result["trainer"].model
    assert result["global_step"] == 2 and len(result["losses"]) == 2
    assert sum(type(m).__name__ == "Linear4bit" for m in model.modules()) > 0
    trainable = result["trainable"]
    assert trainable["image_tower"] == trainable["video_tower"] == 0 and trainable["projector"] > 0

    with safe_open(str(tmp_path / "out/adapter_model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    lora = [k for k in saved if "lora_" in k]
    assert lora and all(".language_model." in k for k in lora)
    assert all("multi_modal_projector" in k for k in saved if "lora_" not in k)
    assert json.loads((tmp_path / "out/adapter_config.json").read_text())["modules_to_save"] == [
        "multi_modal_projector"]

    ids = torch.tensor([[1, 5, 6, 7]])
    full = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(base).eval()
    before = full(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(full, str(tmp_path / "out")).eval()
    after = reloaded(input_ids=ids).logits
    assert torch.isfinite(after).all() and not torch.allclose(before, after)  # the adapter was applied
    quantized = PeftModel.from_pretrained(load_4bit_model(base, "float32"), str(tmp_path / "out"))
    state = quantized.state_dict()
    for key in lora:  # the trained adapter is what the 4-bit base now carries
        torch.testing.assert_close(state[key.replace(".weight", ".default.weight")].float(), saved[key].float())
    merged = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(tmp_path / "out/merged").eval()
    assert not any(type(m).__name__ == "Linear4bit" for m in merged.modules())  # merged into full precision
    torch.testing.assert_close(merged(input_ids=ids).logits, after, atol=1e-4, rtol=1e-4)


def test_qlora_refuses_a_fully_trained_language_model():
    with pytest.raises(ValueError, match="--load_4bit true quantizes the language model"):
        parse_args(["--load_4bit", "true", "--train_language_model", "full", "--output_dir", "/tmp/unused",
                    "--use_cpu", "true"])
