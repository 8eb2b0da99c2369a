"""Stage presets: validation, `apply_stage` per part, LoRA targets never reaching the towers, YAML presets parse."""

import glob

import pytest
from torch import nn

from training.stages import StageArguments, apply_stage, count_trainable, lora_config


def _attn() -> nn.Module:
    return nn.ModuleDict({n: nn.Linear(4, 4) for n in ("q_proj", "k_proj", "v_proj", "out_proj")})


class Projector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(4, 4), nn.Linear(4, 4)


class Layout(nn.Module):
    """The parameter layout of LanguageBindVideoLlavaForConditionalGeneration, in miniature."""

    def __init__(self) -> None:
        super().__init__()
        llm_layer = nn.ModuleDict({n: nn.Linear(4, 4) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj")})
        self.model = nn.ModuleDict({
            "image_tower": nn.ModuleDict({"layers": nn.ModuleList([_attn()])}),
            "video_tower": nn.ModuleDict({"layers": nn.ModuleList([_attn()])}),
            "multi_modal_projector": Projector(),
            "language_model": nn.ModuleDict({"layers": nn.ModuleList([llm_layer])}),
        })
        self.lm_head = nn.Linear(4, 8)

    def prepare_inputs_for_generation(self, *args, **kwargs):  # peft's CAUSAL_LM wrapper looks it up
        return kwargs


def test_stage1_projector_only():
    counts = apply_stage(Layout(), StageArguments())
    assert counts["projector"] == 40 and counts["total"] == 40


def test_stage2_full():
    counts = apply_stage(Layout(), StageArguments(train_language_model="full"))
    assert counts["image_tower"] == counts["video_tower"] == 0
    assert counts["language_model"] == 5 * 20 + 40 and counts["projector"] == 40


def test_validation():
    with pytest.raises(ValueError, match="every part is frozen"):
        StageArguments(train_projector="frozen")
    with pytest.raises(ValueError, match="frozen, full or lora"):
        StageArguments(train_video_tower="half")
    with pytest.raises(ValueError, match="cannot be combined"):
        StageArguments(train_language_model="full", train_video_tower="lora")
    with pytest.raises(ValueError, match="no parameters for part"):
        apply_stage(nn.Linear(2, 2), StageArguments())


def test_lora_targets_only_the_llm():
    from peft import get_peft_model

    model = Layout()
    stage = StageArguments(train_language_model="lora", lora_r=2, lora_alpha=4)
    apply_stage(model, stage)
    config = lora_config(stage)
    assert config.modules_to_save == ["multi_modal_projector"]
    peft_model = get_peft_model(model, config)
    lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    counts = count_trainable(peft_model)
    assert counts["image_tower"] == counts["video_tower"] == 0 and counts["projector"] > 0
    assert lora_config(StageArguments()) is None


def test_yaml_presets_parse():
    from training.arguments import parse_args

    presets = sorted(glob.glob("training/configs/*.yaml"))
    assert {p.split("/")[-1] for p in presets} >= {"stage1.yaml", "stage2_full.yaml", "stage2_lora.yaml", "tiny_cpu.yaml"}
    for path in presets:
        data, model, stage, export, training = parse_args(["--config", path, "--output_dir", "/tmp/x", "--bf16", "false"])
        assert training.remove_unused_columns is False
    _, _, stage, _, training = parse_args(["--config", "training/configs/stage1.yaml", "--output_dir", "/tmp/x", "--bf16", "false"])
    assert stage.modes() == {"image_tower": "frozen", "video_tower": "frozen", "projector": "full",
                             "language_model": "frozen"}
    assert training.learning_rate == 1e-3 and training.lr_scheduler_type == "cosine" and training.warmup_steps == 0.03
    _, _, stage, _, _ = parse_args(["--config", "training/configs/stage2_lora.yaml", "--output_dir", "/tmp/x", "--bf16", "false"])
    assert stage.train_language_model == "lora"
    with pytest.raises(SystemExit):
        parse_args(["--config", "training/configs/stage1.yaml", "--train_image_tower", "bogus"])
