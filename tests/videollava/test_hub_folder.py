"""Every folder we write is a complete Hub folder that name-based loaders cannot mistake for transformers' built-in
VideoLlava: `videollava convert` (original / hf / languagebind), `videollava train` (full fine-tune, a LoRA run's
`merged/`), `videollava merge-lora`, and the shipped default model. `convert --to hf` is the documented exception:
its output is meant for the built-in class."""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from modeling_videollava import LanguageBindVisionConfig, LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.fresh_process import run_fresh
from tests.modeling_videollava.helpers import tiny_hf_model
from tests.modeling_videollava.test_convert import LLM, random_llama, random_tower, write_tokenizer
from tests.modeling_videollava.test_modeling_languagebind import TOWER
from tests.tiny import tiny_config, tiny_tokenizer
from videollava.cli import main
from videollava.hub_folder import HubFolderError, check_hub_folder, code_files, complete_hub_folder
from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR


REPO = Path(__file__).resolve().parents[2]


def _saved(folder: Path) -> Path:
    config = tiny_config()
    LanguageBindVideoLlavaForConditionalGeneration(config).save_pretrained(folder)
    build_processor(config, tiny_tokenizer()).save_pretrained(folder)
    return folder


def assert_complete(folder: Path, processor: bool = True) -> None:
    assert check_hub_folder(folder, processor=processor) == []
    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    assert getattr(transformers, architecture, None) is None, architecture
    for name, source in code_files().items():
        assert (folder / name).read_bytes() == source.read_bytes(), name


################
# The checker and the completer
################
def test_check_lists_every_gap_and_complete_fills_them(tmp_path):
    folder = _saved(tmp_path / "m")
    assert_complete(folder)
    from tests.test_repo_hygiene import HUB_FILES

    assert set(code_files()) == {Path(f).name for f in HUB_FILES}  # every Hub file, found by following the imports
    (folder / "video_io.py").unlink()
    (folder / "modeling_languagebind.py").write_text("# stale\n")
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]["AutoModel"]
    (folder / "config.json").write_text(json.dumps(config))
    problems = check_hub_folder(folder)
    assert "missing code file video_io.py" in problems
    assert any(p.startswith("modeling_languagebind.py differs") for p in problems)
    assert any("auto_map['AutoModel'] is None" in p for p in problems)
    complete_hub_folder(folder)
    assert_complete(folder)


def test_a_builtin_architecture_name_is_refused(tmp_path):
    folder = _saved(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["VideoLlavaForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubFolderError, match="names a class of transformers"):
        complete_hub_folder(folder)
    assert main_check(folder) == 1


def main_check(folder: Path) -> int:
    from videollava.hub_folder import main as hub_main

    return hub_main(["--check", str(folder)])


def test_default_model_is_complete_and_its_code_matches_the_package():
    problems = check_hub_folder(DEFAULT_MODEL)
    assert not problems, f"{problems}: after changing a Hub file run `python -m videollava.hub_folder {DEFAULT_MODEL}`"
    assert_complete(DEFAULT_MODEL)


def test_package_data_ships_every_file_of_the_default_model():
    from setuptools.config.setupcfg import read_configuration

    patterns = read_configuration(REPO / "setup.cfg")["options"]["package_data"]["videollava"]
    files = [p.relative_to(REPO / "videollava").as_posix() for p in DEFAULT_MODEL.iterdir() if p.is_file()
             and p.suffix != ".pyc"]
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert {f.rsplit("/", 1)[-1] for f in files} >= set(code_files()) and not unshipped, (patterns, unshipped)


################
# Every writer
################
def _towers(root: Path) -> tuple[Path, Path]:
    for name, temporal in (("image", False), ("video", True)):
        (root / name).mkdir(parents=True)
        save_file(random_tower("vision_model.", temporal=temporal), root / name / "model.safetensors")
        vision = dict(TOWER, add_time_attn=temporal, num_frames=2 if temporal else 1)
        config = {"model_type": "LanguageBindVideo", "vision_config": vision}
        (root / name / "config.json").write_text(json.dumps(config))
    return root / "image", root / "video"


def _llm(folder: Path, original: bool = False) -> Path:
    folder.mkdir(parents=True)
    state = random_llama()
    if original:
        state |= random_tower("model.image_tower.image_tower.", temporal=False)
        state |= random_tower("model.video_tower.video_tower.", temporal=True)
        state |= {f"model.mm_projector.{i}.{p}": torch.randn(32, 32) if p == "weight" else torch.zeros(32)
                  for i in (0, 2) for p in ("weight", "bias")}
    save_file({k: v for k, v in state.items() if "inv_freq" not in k}, folder / "model.safetensors")
    config = dict(LLM, model_type="llava" if original else "llama", mm_vision_select_layer=-2, bos_token_id=1,
                  eos_token_id=2, architectures=["LlavaLlamaForCausalLM" if original else "LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    write_tokenizer(folder)
    return folder


def test_convert_writes_complete_folders_and_to_hf_keeps_the_builtin_name(tmp_path, monkeypatch):
    monkeypatch.setattr("modeling_videollava.convert.LanguageBindVisionConfig",
                        lambda **kw: LanguageBindVisionConfig(**{**TOWER, **kw}))
    image, video = _towers(tmp_path / "towers")
    hf = tmp_path / "hf"
    tiny_hf_model().save_pretrained(hf)
    tiny_tokenizer().save_pretrained(hf)
    runs = {
        "original": ["--from", "original", "--input", str(_llm(tmp_path / "original", original=True))],
        "hf": ["--from", "hf", "--input", str(hf)],
        "languagebind": ["--from", "languagebind", "--input", str(_llm(tmp_path / "llm")), "--image-tower",
                         str(image), "--video-tower", str(video)],
    }
    for name, args in runs.items():
        assert main(["convert", *args, "--output", str(tmp_path / f"out_{name}"), "--num-frames", "2"]) == 0, name
        assert_complete(tmp_path / f"out_{name}")
    # --to hf: the built-in class's layout and name, on purpose (no custom code, no auto_map)
    assert main(["convert", "--to", "hf", "--input", str(tmp_path / "out_hf"), "--output",
                 str(tmp_path / "back")]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["VideoLlavaForConditionalGeneration"] and "auto_map" not in config
    assert getattr(transformers, config["architectures"][0]) is transformers.VideoLlavaForConditionalGeneration
    assert not any((tmp_path / "back" / name).exists() for name in code_files())


def _train_data(root: Path) -> Path:
    """The shipped samples as LLaVA JSON (the default model's vocabulary knows these words)."""
    records = []
    for i, sample in enumerate(json.loads((SAMPLES_DIR / "samples.json").read_text())):
        kind = "video" if sample["file"].endswith(".mp4") else "image"
        turns = [[{"from": "human", "value": f"<{kind}>\n{qa['question']}" if j == 0 else qa["question"]},
                  {"from": "gpt", "value": qa["answer"]}] for j, qa in enumerate(sample["questions"][:2])]
        records.append({"id": f"s{i}", kind: sample["file"], "conversations": sum(turns, [])})
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.json").write_text(json.dumps(records))
    return root / "train.json"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`videollava train` on the embedded default model, named by its relative path: a full fine-tune (the real CLI
    in a subprocess, run from the repository root) and a LoRA run (in-process); then `videollava merge-lora`."""
    from training.cli import main as train_main

    root = tmp_path_factory.mktemp("trained")
    data = _train_data(root)
    common = ["--config", "training/configs/tiny_cpu.yaml", "--dataset", str(data), "--image_folder",
              str(SAMPLES_DIR), "--video_folder", str(SAMPLES_DIR), "--max_steps", "1", "--save_strategy", "no",
              "--disable_tqdm", "true", "--per_device_train_batch_size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "videollava.cli", "train", *common, "--model_name_or_path",
                             "videollava/default_model", "--output_dir", str(root / "full")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert train_main([*common, "--model_name_or_path", str(DEFAULT_MODEL), "--output_dir", str(root / "lora"),
                       "--train_language_model", "lora", "--lora_r", "4", "--lora_alpha", "8"]) == 0
    assert main(["merge-lora", str(root / "lora"), str(root / "merge_lora")]) == 0
    return root


def test_training_outputs_and_merge_lora_are_complete_hub_folders(trained):
    for folder in ("full", "lora/merged", "merge_lora"):
        assert_complete(trained / folder)
    full = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(trained / "full")
    default = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(DEFAULT_MODEL)
    changed = [n for n, p in full.named_parameters() if not torch.equal(p, default.get_parameter(n))]
    assert changed and all(not n.startswith(("model.image_tower", "model.video_tower")) for n in changed)


FRESH_LOAD = """
import json, sys
from transformers import AutoModelForImageTextToText, AutoProcessor
out = {}
for path in sys.argv[1:]:
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    out[path] = [type(model).__module__.split(".")[0], type(model).__name__, type(processor).__name__]
print(json.dumps(out))
"""


def test_written_folders_load_where_our_package_cannot_be_imported(trained, tmp_path):
    folders = [str(trained / f) for f in ("full", "lora/merged", "merge_lora")]
    result = run_fresh(FRESH_LOAD, *folders, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(v == ["transformers_modules", "LanguageBindVideoLlavaForConditionalGeneration",
                     "LanguageBindVideoLlavaProcessor"] for v in loaded.values()), loaded


def test_stale_code_in_a_source_folder_is_replaced_on_save(tmp_path):
    """A folder re-saved by our writers gets the package's current code, whatever the source folder held."""
    from training.export import load_model, load_processor, save_folder

    source = _saved(tmp_path / "src")
    (source / "video_io.py").write_text((source / "video_io.py").read_text() + "# an older copy\n")
    save_folder(load_model(str(source), dtype="float32"), load_processor(str(source)), str(tmp_path / "out"))
    assert_complete(tmp_path / "out")
    shutil.rmtree(source)
