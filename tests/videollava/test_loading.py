"""Loading: 4-bit and 8-bit loads put bitsandbytes layers in the LLM only (towers, projector, lm_head in the compute
dtype), answer the shipped samples like full precision, and nothing is ever `.to()`-ed; `--device-map auto`,
option conflicts and missing extras are one clear line."""

import json
from unittest import mock

import pytest
import torch

from videollava.cli import main
from videollava.engine import Engine, GenerationSettings
from videollava.loading import (DEFAULT_MODEL, SAMPLES_DIR, ChatError, LoadOptions, count_quantized, load_model,
                                load_processor, quantization_config, require_extra)

bnb = pytest.importorskip("bitsandbytes", reason="needs the [quant] extra (CI installs it)")
SAMPLES = json.loads((SAMPLES_DIR / "samples.json").read_text())
# recorded on CPU (bitsandbytes 0.50.2): answers equal to full precision, out of the 17 sample questions
MIN_AGREEMENT = {8: 17, 4: 14}


def _answers(model, processor) -> list[str]:
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=8))
    answers = []
    for sample in SAMPLES:
        medium = engine.load("video" if sample["file"].endswith(".mp4") else "image", f"sample:{sample['file']}")
        answers += [engine.conversation().answer(qa["question"], [medium]) for qa in sample["questions"]]
    return answers


def _load(**options):
    config, processor = load_processor(str(DEFAULT_MODEL))
    with mock.patch("torch.nn.Module.to", side_effect=AssertionError("a loaded model was moved with .to()")):
        model = load_model(str(DEFAULT_MODEL), config, options=LoadOptions(device="cpu", **options))
    return model, processor


@pytest.fixture(scope="module")
def full_precision_answers():
    model, processor = _load()
    assert count_quantized(model) == dict.fromkeys(count_quantized(model), 0)
    return _answers(model, processor)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_load_quantizes_only_the_llm_and_answers_the_samples(bits, full_precision_answers):
    model, processor = _load(**{f"load_{bits}bit": True})
    counts = count_quantized(model)
    layers = model.config.text_config.num_hidden_layers * 7  # q k v o gate up down
    assert counts == {"language_model": layers, "image_tower": 0, "video_tower": 0, "projector": 0, "other": 0}
    assert type(model.lm_head).__name__ == "Linear"
    for part in (model.model.image_tower, model.model.video_tower, model.model.multi_modal_projector):
        assert {p.dtype for p in part.parameters()} == {torch.float32}  # the compute dtype on CPU
    answers = _answers(model, processor)
    agree = sum(a == b for a, b in zip(answers, full_precision_answers))
    assert agree >= MIN_AGREEMENT[bits], (agree, answers, full_precision_answers)


def test_quantize_all_also_quantizes_towers_and_projector():
    model, _ = _load(load_4bit=True, quantize="all")
    counts = count_quantized(model)
    assert counts["image_tower"] > 0 and counts["video_tower"] > 0 and counts["projector"] == 2
    assert type(model.lm_head).__name__ == "Linear"


def test_quantization_config_is_nf4_double_quant_with_llm_only_skips():
    config = quantization_config(4, torch.bfloat16)
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(config.llm_int8_skip_modules) == {"model.image_tower", "model.video_tower",
                                                 "model.multi_modal_projector", "lm_head"}
    assert quantization_config(8).load_in_8bit


def test_chat_cli_answers_in_4_bit_and_with_device_map_auto(capfd):
    sample = next(s for s in SAMPLES if s["file"] == "moving.mp4")
    qa = next(q for q in sample["questions"] if q["question"] == "Which way does the shape move?")
    for flags in (["--load-4bit"], ["--load-8bit"], ["--device-map", "auto"]):
        assert main(["chat", *flags, "--video", "sample:moving.mp4", qa["question"]]) == 0
        captured = capfd.readouterr()
        assert captured.out.strip() == qa["model_answer"], (flags, captured)


def test_conflicting_or_missing_options_are_one_line(capfd):
    assert main(["chat", "--load-4bit", "--load-8bit", "hi"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["error: --load-4bit and --load-8bit exclude each other; pick one"]
    with pytest.raises(ChatError, match=r"pip install 'videollava-lb\[quant\]'"):
        require_extra("no_such_module_for_the_test", "quant", "--load-4bit")
