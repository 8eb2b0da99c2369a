"""A saved folder is Hub custom code: it loads in a fresh process where our package is not importable; folders written
under the old class names keep loading; name-based loaders fail loudly on ours."""

import json
import shutil
import textwrap

import pytest
import torch

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.fresh_process import run_fresh
from tests.modeling_videollava.helpers import mixed_batch
from tests.tiny import tiny_config, tiny_tokenizer
from videollava.hub_folder import check_hub_folder


FRESH = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
    try:
        import modeling_videollava
        sys.exit("our package must not be importable here")
    except ImportError:
        pass
    batch, rows = torch.load(sys.argv[1]), {}
    for path in sys.argv[2:]:
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True, device_map="auto").eval()
        backbone = AutoModel.from_pretrained(path, trust_remote_code=True)
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        rows[path] = {"module": type(model).__module__, "config": type(config).__name__, "model": type(model).__name__,
                      "backbone": type(backbone).__name__, "tokens": out.tolist(),
                      "temporal": config.video_config.add_time_attn}
    print(json.dumps(rows))
    """
)


################
# Folders written under the old class names (VideoLlavaConfig / VideoLlavaForConditionalGeneration /
# VideoLlavaProcessor, with their own old code files) keep loading
################
OLD_NAMES = {"LanguageBindVideoLlava": "VideoLlava"}  # VideoLlava{Config,Model,ForConditionalGeneration,Processor,...}


def old_named_folder(source, target):
    """A folder as the package wrote it before the rename: current code and json with the old class names."""
    shutil.copytree(source, target)
    for path in target.iterdir():
        if path.suffix in (".py", ".json"):
            text = path.read_text()
            for new, old in OLD_NAMES.items():
                text = text.replace(new, old)
            path.write_text(text)
    return target


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(new folder, old-named folder, the batch, the tokens our model generates for it)."""
    root = tmp_path_factory.mktemp("named")
    torch.manual_seed(0)
    config = tiny_config()
    model = LanguageBindVideoLlavaForConditionalGeneration(config).eval()
    model.save_pretrained(root / "new")
    build_processor(config, tiny_tokenizer()).save_pretrained(root / "new")
    old = old_named_folder(root / "new", root / "old")
    assert json.loads((old / "config.json").read_text())["architectures"] == ["VideoLlavaForConditionalGeneration"]
    batch = mixed_batch(config)
    torch.save(batch, root / "batch.pt")
    with torch.no_grad():
        expected = model.generate(**batch, max_new_tokens=4, do_sample=False).tolist()
    return root / "new", old, root / "batch.pt", expected


def test_saved_folders_load_with_trust_remote_code_in_a_fresh_process(folders, tmp_path):
    """Ours, and one written under the old names: each loads its own code (never transformers' VideoLlava)."""
    new, old, batch, expected = folders
    config = json.loads((new / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    result = run_fresh(FRESH, batch, new, old, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    for path, prefix in ((new, "LanguageBindVideoLlava"), (old, "VideoLlava")):
        row = rows[str(path)]
        assert row["module"].startswith("transformers_modules.")
        assert (row["config"], row["model"], row["backbone"], row["temporal"]) == (
            f"{prefix}Config", f"{prefix}ForConditionalGeneration", f"{prefix}Model", True)
        assert row["tokens"] == expected


def test_old_named_folder_loads_through_our_loaders(folders, tmp_path):
    from evaluation.runner import load_model_and_processor
    from processing import LanguageBindImageProcessor, LanguageBindVideoLlavaProcessor
    from training.export import load_model, load_processor, save_folder
    from videollava import loading

    _, old, batch_path, expected = folders
    batch = torch.load(batch_path)
    config, processor = loading.load_processor(str(old))
    chat_model = loading.load_model(str(old), config, torch.device("cpu"), "float32")
    eval_model, eval_processor = load_model_and_processor(str(old), "float32", device="cpu")
    train_model, train_processor = load_model(str(old), dtype="float32"), load_processor(str(old))
    for model in (chat_model, eval_model, train_model):
        assert type(model) is LanguageBindVideoLlavaForConditionalGeneration
        with torch.no_grad():
            assert model.eval().generate(**batch, max_new_tokens=4, do_sample=False).tolist() == expected
    for proc in (processor, eval_processor, train_processor):  # our installed code, not the folder's old copy
        assert type(proc) is LanguageBindVideoLlavaProcessor
        assert type(proc.image_processor) is LanguageBindImageProcessor
    # re-saved by our writers, it gets the new names and the current code
    save_folder(train_model, train_processor, str(tmp_path / "resaved"))
    saved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert saved["architectures"] == ["LanguageBindVideoLlavaForConditionalGeneration"]
    assert check_hub_folder(tmp_path / "resaved") == []


################
# Name-based loaders fail loudly on our folders (and would pick the built-in class on an old-named one)
################
NAME_BASED = """
import json, sys
import transformers
from transformers import AutoConfig
from transformers.cli.serving.model_manager import ModelManager
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
out = {}
for path in sys.argv[1:]:
    arch = json.load(open(path + "/config.json"))["architectures"][0]
    row = {"getattr": getattr(transformers, arch, None) is not None}
    try:  # what `transformers serve --trust-remote-code` does (ModelManager._load_model: getattr(transformers, arch))
        model = ModelManager(device="cpu", trust_remote_code=True)._load_model(path + "@main")
        row["serve"] = f"loaded {type(model).__module__}.{type(model).__name__}"
    except Exception as exc:
        row["serve"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    try:  # transformers' config class -> model class mapping, keyed by the config class's name
        row["mapping"] = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)].__module__
    except KeyError as exc:
        row["mapping"] = f"KeyError: {exc}"
    out[path] = row
print(json.dumps(out))
"""


def test_name_based_loaders_fail_loudly_on_our_folders(folders, tmp_path):
    new, old, _, _ = folders
    result = run_fresh(NAME_BASED, new, old, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert rows[str(new)] == {
        "getattr": False,
        "serve": "AttributeError: module transformers has no attribute LanguageBindVideoLlavaForConditionalGeneration",
        "mapping": "KeyError: 'LanguageBindVideoLlavaConfig'",
    }
    # the old names: the built-in class is picked by name (what the rename prevents); here its loader trips over
    # the tiny config, with the 7B config it loaded our weights and dropped the temporal attention
    assert rows[str(old)]["getattr"]
    assert rows[str(old)]["mapping"] == "transformers.models.video_llava.modeling_video_llava"
    assert not rows[str(old)]["serve"].startswith("loaded transformers_modules")
