"""The recipe of the embedded default model: its presets parse with the training pipeline's parser, and the shipped
card and samples match what `examples/train_default_model.py` records."""

import json
from pathlib import Path

import pytest

from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR


PRESETS = Path(__file__).resolve().parents[2] / "examples" / "default_model"


@pytest.mark.parametrize("name", ["stage1.yaml", "stage2.yaml"])
def test_presets_parse(name, tmp_path):
    from training.arguments import parse_args

    _, _, stage, _, training = parse_args(["--config", str(PRESETS / name), "--output_dir", str(tmp_path)])
    assert stage.modes() == {"image_tower": "frozen", "video_tower": "frozen", "projector": "full",
                             "language_model": "full"}
    assert training.use_cpu and not training.bf16 and training.max_steps > 0 and training.seed == 0


@pytest.mark.skipif(not (SAMPLES_DIR / "samples.json").exists(), reason="no shipped samples")
def test_samples_index_matches_files_and_card():
    samples = json.loads((SAMPLES_DIR / "samples.json").read_text())
    card = (DEFAULT_MODEL / "README.md").read_text()
    for sample in samples:
        assert (SAMPLES_DIR / sample["file"]).is_file()
        for qa in sample["questions"]:
            assert {"question", "answer", "model_answer", "question_type"} <= set(qa)
            assert f"| `sample:{sample['file']}` | {qa['question']} | {qa['answer']} | {qa['model_answer']} |" in card
