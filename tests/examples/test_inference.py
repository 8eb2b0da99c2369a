"""examples/inference.py answers through the Auto classes on a saved tiny folder (image + video in one prompt)."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.processing.media import make_video
from tests.tiny import tiny_config, tiny_tokenizer


ROOT = Path(__file__).resolve().parents[2]


def test_inference_example_runs_on_a_saved_folder(tmp_path):
    config = tiny_config()
    LanguageBindVideoLlavaForConditionalGeneration(config).save_pretrained(tmp_path / "model")
    build_processor(config, tiny_tokenizer()).save_pretrained(tmp_path / "model")
    make_video(tmp_path / "clip.mp4")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "photo.png")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "inference.py"), "--model", str(tmp_path / "model"), "--video",
         str(tmp_path / "clip.mp4"), "--image", str(tmp_path / "photo.png"), "--question", "what is in this video ?",
         "--max-new-tokens", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
