"""End-to-end SFTTrainer runs on the tiny model: what each stage may change, LoRA merge parity, overfitting,
model card and push (offline)."""

import json
import os

import pytest
import torch

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from tests.tiny import tiny_config
from tests.training.fakes import real_processor, write_llava_json
from training.arguments import parse_args
from training.cli import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_llava_json(root, n=16)
    return root


def _run(data_dir, out, *extra, model=None):
    torch.manual_seed(0)
    model = model or LanguageBindVideoLlavaForConditionalGeneration(tiny_config())
    argv = ["--config", "training/configs/tiny_cpu.yaml", "--dataset", f"{data_dir}/train.json",
            "--image_folder", f"{data_dir}/images", "--video_folder", f"{data_dir}/videos",
            "--output_dir", str(out), "--disable_tqdm", "true", "--save_strategy", "no", *extra]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(*parse_args(argv), model=model, processor=real_processor(model.config))
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    return model, result, changed


def _parts(names):
    return {n.split(".")[1] if n.startswith("model.") else n.split(".")[0] for n in names}


def test_stage1_changes_only_the_projector(data_dir, tmp_path):
    _, result, changed = _run(data_dir, tmp_path, "--train_language_model", "frozen", "--max_steps", "2")
    assert _parts(changed) == {"multi_modal_projector"}
    assert result["trainable"]["total"] == result["trainable"]["projector"]


def test_stage2_full_leaves_towers_bit_identical(data_dir, tmp_path):
    model, result, changed = _run(data_dir, tmp_path, "--max_steps", "2")
    assert _parts(changed) == {"multi_modal_projector", "language_model", "lm_head"}
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: image-text-to-text" in card and "custom_code" in card and "trust_remote_code=True" in card
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModelForImageTextToText"]


def test_lora_touches_only_llm_and_projector_and_merge_matches(data_dir, tmp_path):
    from peft import PeftModel

    base = LanguageBindVideoLlavaForConditionalGeneration(tiny_config())
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    base.save_pretrained(tmp_path / "base")
    model, result, _ = _run(data_dir, tmp_path / "out", "--train_language_model", "lora", "--lora_r", "4",
                            "--lora_alpha", "8", "--lora_dropout", "0", "--learning_rate", "1e-2",
                            "--max_steps", "2", "--model_name_or_path", str(tmp_path / "base"), model=base)
    trainable = result["trainable"]
    assert trainable["image_tower"] == trainable["video_tower"] == 0 and trainable["projector"] > 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out/adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    lora_names = [k for k in keys if "lora_" in k]
    assert lora_names and all(".language_model." in k for k in lora_names)
    assert {k for k in keys if "lora_" not in k} and all("multi_modal_projector" in k for k in keys if "lora_" not in k)
    adapter_cfg = json.loads((tmp_path / "out/adapter_config.json").read_text())
    assert adapter_cfg["modules_to_save"] == ["multi_modal_projector"]

    merged = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(tmp_path / "out/merged").eval()
    merged_state = merged.state_dict()
    for name, value in base_state.items():
        same = torch.equal(value, merged_state[name])
        if name.startswith(("model.image_tower.", "model.video_tower.")):
            assert same, f"{name} changed"
    changed = _parts(n for n, v in base_state.items() if not torch.equal(v, merged_state[n]))
    assert changed == {"multi_modal_projector", "language_model"}

    # the adapter (reloaded onto the base) and the merged model agree
    fresh_base = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(tmp_path / "base")
    adapter = PeftModel.from_pretrained(fresh_base, tmp_path / "out").eval()
    batch = result["trainer"].data_collator([result["trainer"].train_dataset[i] for i in range(4)])
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(adapter(**batch).logits, merged(**batch).logits, atol=1e-5, rtol=1e-5)
    card = (tmp_path / "out/merged/README.md").read_text()
    assert "library_name: transformers" in card


def test_tiny_model_overfits_16_samples(data_dir, tmp_path):
    _, result, _ = _run(data_dir, tmp_path, "--max_steps", "25", "--learning_rate", "1e-2",
                        "--per_device_train_batch_size", "8")
    losses = result["losses"]
    assert losses[-1] <= 0.1 * losses[0], losses


def test_push_to_hub_uploads_the_folder_offline(data_dir, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, sorted(os.listdir(folder_path))))
            return "https://huggingface.co/me/tiny/commit/0"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    _run(data_dir, tmp_path, "--max_steps", "1", "--push_to_hub", "true", "--hub_model_id", "me/tiny")
    assert calls[0] == ("create", "me/tiny")
    files = calls[1][2]
    assert {"README.md", "config.json", "model.safetensors", "modeling_videollava.py"} <= set(files)
    assert "me/tiny" in (tmp_path / "README.md").read_text()


def test_card_loss_of_a_rerun_that_resumes_at_the_end_is_the_logged_one(data_dir, tmp_path):
    """Defect 13: rerunning a finished (epoch-based) run resumes after its last epoch and trains 0 steps; the card
    used that call's mean loss (0.0) instead of the logged history."""
    steps = ("--max_steps", "-1", "--num_train_epochs", "1", "--save_strategy", "epoch")  # 16 samples: 4 steps
    _, first, _ = _run(data_dir, tmp_path, *steps)
    expected = f"| final train loss | {round(first['losses'][-1], 4)} (step 4) |"
    assert expected in (tmp_path / "README.md").read_text()
    _, again, _ = _run(data_dir, tmp_path, *steps)
    assert again["global_step"] == 4 and expected in (tmp_path / "README.md").read_text()


def test_small_runs_are_held_to_max_skipped_fraction(tmp_path, caplog):
    """Defect 7: 3 of 8 samples bad (malformed records, or missing media) must fail `videollava train`, although
    fewer than `--skip_min_seen` samples are drawn; every drop is in skipped_media.jsonl."""
    from tests.training.fakes import save_tiny_model
    from training.media import read_skip_log
    from videollava.cli import main

    root = tmp_path / "data"
    write_llava_json(str(root), n=8)
    save_tiny_model(str(tmp_path / "tiny"))
    records = json.loads((root / "train.json").read_text())

    def run(rows, out):
        (root / "train.json").write_text(json.dumps(rows))
        caplog.clear()
        code = main(["train", "--config", "training/configs/tiny_cpu.yaml", "--model_name_or_path",
                     str(tmp_path / "tiny"), "--dataset", str(root / "train.json"), "--image_folder",
                     str(root / "images"), "--video_folder", str(root / "videos"), "--output_dir", str(out),
                     "--disable_tqdm", "true", "--save_strategy", "no", "--max_steps", "2"])
        return code, [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]

    code, errors = run(records[:5] + [None, "text", {"id": "x", "conversations": "hi"}], tmp_path / "records")
    assert code == 1 and len(errors) == 1 and errors[0].startswith(
        "3 of 8 records dropped while loading ({'record': 3}), more than max_skipped_fraction=0.05")
    assert [r["kind"] for r in read_skip_log(str(tmp_path / "records"))] == ["record"] * 3

    missing = [dict(r) for r in records]
    missing[0]["image"], missing[1]["video"], missing[2]["video"] = "nope.png", "nope.mp4", "nope.mp4"
    code, errors = run(missing, tmp_path / "media")
    assert code == 1 and len(errors) == 1 and errors[0].startswith(
        "3 of 8 samples drawn during training were skipped ({'media': 3}), more than max_skipped_fraction=0.05")
    assert not (tmp_path / "media" / "model.safetensors").exists()  # nothing published from a failed run
    assert sorted(r["id"] for r in read_skip_log(str(tmp_path / "media"))) == ["s0", "s1", "s2"]
