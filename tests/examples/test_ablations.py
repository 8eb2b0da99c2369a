"""The ablation runner's switches do what they say: `examples/ablations.py`'s variants, built through the recipe's real
`prepare` (random LanguageBind tower folders, the real `videollava convert --from languagebind`), train on the media
they claim and start from the towers they claim. No training here."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import default_model_recipe as recipe  # noqa: E402
from ablations import ABLATIONS, run_key  # noqa: E402
from synthetic_shapes import generate  # noqa: E402


def _languagebind_folder(folder: Path, temporal: bool, seed: int) -> dict[str, torch.Tensor]:
    """A random tower of the recipe's size saved in the LanguageBind layout; returns its `vision_model.*` weights
    without the prefix."""
    from modeling_videollava.configuration_videollava import LanguageBindVisionConfig
    from modeling_videollava.modeling_languagebind import LanguageBindVisionModel

    torch.manual_seed(seed)
    config = LanguageBindVisionConfig(**recipe.TOWER, add_time_attn=temporal, num_frames=8 if temporal else 1)
    weights = LanguageBindVisionModel(config).state_dict()
    folder.mkdir(parents=True)
    save_file({f"vision_model.{k}": v.contiguous() for k, v in weights.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"vision_config": config.to_dict()}))
    return weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations")
    generate(root / "data", seed=0, num_train=16, num_heldout=2)
    towers = {"image": _languagebind_folder(root / "towers" / "image", False, 1),
              "video": _languagebind_folder(root / "towers" / "video", True, 2),
              "mae": _languagebind_folder(root / "mae", False, 3)}
    return root, towers


def _variant(ablation: str, role: str) -> recipe.RecipeOptions:
    return next(options for _, options, r in ABLATIONS[ablation] if r == role)


def _tower_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    state = load_file(folder / "model.safetensors")
    return {k.removeprefix(f"model.{name}."): v for k, v in state.items() if k.startswith(f"model.{name}.")}


@pytest.mark.parametrize("ablation, role, media, image_tower", [
    ("joint_training", "baseline", {"video"}, "image"),
    ("joint_training", "method", {"image", "video"}, "image"),
    ("alignment", "baseline", {"image", "video"}, "mae"),
    ("alignment", "method", {"image", "video"}, "image"),
])
def test_variant_trains_on_its_media_from_its_towers(setup, tmp_path, ablation, role, media, image_tower):
    root, towers = setup
    options = _variant(ablation, role)
    paths = recipe.prepare(root / "data", root / "towers", tmp_path, options, mae=root / "mae")
    all_captions = json.loads((root / "data" / "stage1.json").read_text())
    for stage in ("stage1", "stage2"):
        records = json.loads(paths[stage].read_text())
        assert {k for r in records for k in ("image", "video") if k in r} == media
        expected = [r for r in all_captions if any(k in r for k in media)]
        captions = [r for r in records if r["conversations"][0]["value"].endswith(("Describe the image.",
                                                                                   "Describe the video."))]
        assert captions == expected  # stage 1 is the captions; stage 2 mixes the same captions into the QA
    assert len(json.loads(paths["stage2"].read_text())) > len(expected)
    for name, source in (("image_tower", towers[image_tower]), ("video_tower", towers["video"])):
        converted = _tower_weights(paths["init"], name)
        assert converted.keys() == source.keys()
        assert all(torch.equal(converted[k], source[k]) for k in source), name


def test_seed_changes_the_language_model_only(setup, tmp_path):
    root, _ = setup
    a = recipe.prepare(root / "data", root / "towers", tmp_path / "a", recipe.RecipeOptions(seed=0))
    b = recipe.prepare(root / "data", root / "towers", tmp_path / "b", recipe.RecipeOptions(seed=1))
    wa, wb = load_file(a["init"] / "model.safetensors"), load_file(b["init"] / "model.safetensors")
    llm = [k for k in wa if "language_model" in k]
    towers = [k for k in wa if "_tower." in k]
    assert llm and towers
    assert any(not torch.equal(wa[k], wb[k]) for k in llm)
    assert all(torch.equal(wa[k], wb[k]) for k in towers)


def test_shared_configurations_share_a_run_and_bad_options_are_refused():
    joint, united = _variant("joint_training", "method"), _variant("alignment", "method")
    assert run_key(joint) == run_key(united)
    assert len({run_key(o) for ablation in ABLATIONS.values() for _, o, _ in ablation}) == 3
    with pytest.raises(ValueError, match="media"):
        recipe.RecipeOptions(media=("audio",))
    with pytest.raises(ValueError, match="image_tower"):
        recipe.RecipeOptions(image_tower="clip")
    with pytest.raises(ValueError, match="MAE tower"):
        recipe.prepare(Path("x"), Path("y"), Path("z"), recipe.RecipeOptions(image_tower="mae"))
