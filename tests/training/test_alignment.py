"""Tower alignment (`training.alignment`, `videollava align`) on a few synthetic shapes media: the contrastive
stages learn, the folders are LanguageBind checkpoints that `videollava convert --from languagebind` turns into the
model's towers, the pixels are the processor's, and bad input fails in one line."""

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from synthetic_shapes import generate  # noqa: E402
from tiny_tokenizer import build_tokenizer  # noqa: E402

from modeling_videollava import LanguageBindVisionConfig, LanguageBindVideoLlavaForConditionalGeneration  # noqa: E402
from modeling_videollava.modeling_languagebind import LanguageBindVisionModel  # noqa: E402
from training.alignment import AlignConfig, align_towers, caption_neighbours, distinct_caption_batch  # noqa: E402
from training.alignment_data import MediaPixels, read_captions  # noqa: E402


SIZE, FRAMES = 32, 4
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIZE,
             patch_size=16)
CONFIG = AlignConfig(text_hidden_size=32, text_intermediate_size=64, text_layers=1, text_heads=2,
                     projection_dim=16, image_steps=60, video_steps=80, batch_size=16, lr=3e-3, warmup_steps=5,
                     num_frames=FRAMES)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is several times faster than two on shared cores (`videollava align
    --threads`); restored afterwards for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, seed=0, num_train=32, num_heldout=12, size=SIZE)
    return root


@pytest.fixture(scope="module")
def aligned(data, tmp_path_factory) -> tuple[Path, dict]:
    """Aligned on the training captions and scored on them too: a few steps can fit 32 items, not generalise."""
    out = tmp_path_factory.mktemp("towers")
    return out, align_towers(data / "stage1.json", data / "stage1.json", data, build_tokenizer(), TOWER, out, CONFIG)


def test_both_stages_lower_the_loss_and_retrieve_above_chance(aligned):
    out, report = aligned
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    for stage, kind in (("image", "image"), ("video", "video")):
        loss = report["loss"][stage]
        assert loss["last10_mean"] < 0.7 * loss["first"], (stage, loss)
        r1, chance, floor = (report[stage][k][f"text_to_{kind}_r1"] for k in ("aligned", "chance", "random"))
        assert r1 >= 2 * chance and r1 > floor, (stage, report[stage])
        assert report[stage]["aligned"][f"{kind}_to_text_r1"] > report[stage]["chance"][f"{kind}_to_text_r1"]
    assert report["items"]["train_images"] + report["items"]["train_videos"] == 32
    assert set(report["seconds"]) == {"data", "image", "video", "total"}


@pytest.fixture(scope="module")
def aligned_frozen(data, tmp_path_factory) -> Path:
    """The same run with LanguageBind's frozen text side in stage B."""
    out = tmp_path_factory.mktemp("towers_frozen")
    config = AlignConfig(**{**asdict(CONFIG), "video_stage_text": "frozen"})
    align_towers(data / "stage1.json", data / "stage1.json", data, build_tokenizer(), TOWER, out, config)
    return out


def text_side(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(("text_model.", "text_projection"))}


def test_video_stage_trains_the_video_tower_from_the_image_tower(aligned):
    out, _ = aligned
    image, video = load_file(out / "image" / "model.safetensors"), load_file(out / "video" / "model.safetensors")
    temporal_out = [v for k, v in video.items() if "temporal_attn.out_proj.weight" in k]
    assert temporal_out and all(v.abs().sum() > 0 for v in temporal_out)  # zero-initialised, then trained
    assert not torch.equal(video["vision_model.encoder.layers.0.mlp.fc1.weight"],
                           image["vision_model.encoder.layers.0.mlp.fc1.weight"])
    config = json.loads((out / "video" / "config.json").read_text())
    assert config["vision_config"]["add_time_attn"] and config["vision_config"]["num_frames"] == FRAMES
    assert config["projection_dim"] == CONFIG.projection_dim and config["text_config"]["hidden_size"] == 32


def test_frozen_text_side_is_stage_a_s_in_both_checkpoints(aligned_frozen):
    image, video = (load_file(aligned_frozen / k / "model.safetensors") for k in ("image", "video"))
    assert text_side(image)
    for key, value in text_side(image).items():
        torch.testing.assert_close(video[key], value, rtol=0, atol=0, msg=key)


def test_joint_text_side_learns_in_stage_b_and_both_towers_share_it(aligned, aligned_frozen):
    """joint: the image tower keeps its stage-A weights (the frozen run's, same seed), the text side moves on from
    stage A's and is the same in both checkpoints, so both towers stay bound to one text encoder."""
    out, report = aligned
    image, video = (load_file(out / k / "model.safetensors") for k in ("image", "video"))
    stage_a = load_file(aligned_frozen / "image" / "model.safetensors")
    for key, value in stage_a.items():
        if key.startswith("vision_model.") or key in ("visual_projection.weight", "logit_scale"):
            torch.testing.assert_close(image[key], value, rtol=0, atol=0, msg=key)
    for key, value in text_side(image).items():
        torch.testing.assert_close(video[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(value, stage_a[key]) for key, value in text_side(image).items())
    chance = report["image"]["chance"]["text_to_image_r1"]
    assert report["image"]["aligned"]["text_to_image_r1"] >= 2 * chance, report["image"]
    assert set(report["image"]["after_image_stage"]) == set(report["image"]["aligned"])


def test_video_stage_text_must_be_frozen_or_joint():
    with pytest.raises(ValueError, match="video_stage_text must be 'frozen' or 'joint', got 'thawed'"):
        AlignConfig(video_stage_text="thawed")


def tiny_llm(folder: Path) -> None:
    from tests.modeling_videollava.test_convert import LLM, random_llama, write_tokenizer

    folder.mkdir()
    save_file({k: v for k, v in random_llama().items() if "inv_freq" not in k}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(dict(LLM, model_type="llama", architectures=["LlamaForCausalLM"])))
    write_tokenizer(folder)


def test_aligned_towers_convert_into_the_model(aligned, data, tmp_path):
    from videollava.cli import main

    out, _ = aligned
    tiny_llm(tmp_path / "llm")
    assert main(["convert", "--from", "languagebind", "--image-tower", str(out / "image"), "--video-tower",
                 str(out / "video"), "--input", str(tmp_path / "llm"), "--output", str(tmp_path / "model")]) == 0
    model = LanguageBindVideoLlavaForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    for name, tower in (("image", model.model.image_tower), ("video", model.model.video_tower)):
        saved = {k.removeprefix("vision_model."): v for k, v in load_file(out / name / "model.safetensors").items()
                 if k.startswith("vision_model.") and not k.endswith("position_ids")}
        ours = {k: v for k, v in tower.state_dict().items() if not k.endswith("position_ids")}
        assert ours.keys() == saved.keys()
        for key, value in saved.items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=f"{name} {key}")
    assert model.config.video_config.num_frames == FRAMES and model.config.video_config.add_time_attn

    # The same features on a real clip: the converted tower vs the checkpoint rebuilt on its own.
    config = json.loads((out / "video" / "config.json").read_text())["vision_config"]
    keep = set(LanguageBindVisionConfig().to_dict()) - {"model_type", "architectures", "transformers_version"}
    reference = LanguageBindVisionModel(LanguageBindVisionConfig(**{k: v for k, v in config.items() if k in keep}))
    weights = {k.removeprefix("vision_model."): v for k, v in load_file(out / "video" / "model.safetensors").items()
               if k.startswith("vision_model.")}
    reference.load_state_dict(weights, strict=True)
    video = read_captions(data / "stage1.json", data)["video"].paths[:2]
    pixels = MediaPixels(SIZE, FRAMES).videos(video)
    with torch.no_grad():
        ours = model.model.video_tower(pixels, output_hidden_states=True)
        ref = reference.eval()(pixels, output_hidden_states=True)
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output)
    torch.testing.assert_close(ours.hidden_states[-2], ref.hidden_states[-2])


def test_pixels_are_the_processors(data):
    from processing import build_processor
    from tests.tiny import tiny_config, tiny_tokenizer

    config = tiny_config(num_frames=FRAMES)
    config.image_config.image_size = config.video_config.image_size = SIZE
    processor = build_processor(config, tiny_tokenizer())
    sets = read_captions(data / "stage1.json", data)
    pixels = MediaPixels(SIZE, FRAMES)
    images, videos = sets["image"].paths[:2], sets["video"].paths[:3]
    expected = processor(text=["<image>"] * 2, images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels.images(images), expected, rtol=0, atol=0)
    expected = processor(text=["<video>"] * 3, videos=videos, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(pixels.videos(videos), expected, rtol=0, atol=0)


def cli_args(data: Path, tokenizer: Path, output: Path, train: Path | None = None) -> list[str]:
    return ["align", "--train", str(train or data / "stage1.json"), "--heldout", str(data / "heldout_captions.json"),
            "--media-root", str(data), "--tokenizer", str(tokenizer), "--output", str(output),
            "--tower-hidden-size", "32", "--tower-intermediate-size", "64", "--tower-num-hidden-layers", "1",
            "--tower-num-attention-heads", "2", "--tower-image-size", str(SIZE), "--text-hidden-size", "32",
            "--text-intermediate-size", "64", "--text-layers", "1", "--text-heads", "2", "--projection-dim", "8",
            "--image-steps", "3", "--video-steps", "2", "--batch-size", "8", "--num-frames", str(FRAMES),
            "--threads", "1"]


def test_align_command_writes_towers_and_report(data, tmp_path, capsys):
    from videollava.cli import main

    build_tokenizer().save_pretrained(tmp_path / "tok")
    assert main(cli_args(data, tmp_path / "tok", tmp_path / "out")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["image_steps"] == 3 and report["tower_config"]["num_hidden_layers"] == 1
    held = json.loads((data / "heldout_captions.json").read_text())
    assert report["items"]["heldout_images"] + report["items"]["heldout_videos"] == len(held)
    for name in ("image", "video"):
        assert {p.name for p in (tmp_path / "out" / name).iterdir()} == {"config.json", "model.safetensors"}


def test_align_command_bad_input_exits_1_with_one_line(data, tmp_path, caplog):
    from videollava.cli import main

    build_tokenizer().save_pretrained(tmp_path / "tok")
    missing = tmp_path / "nowhere.json"
    with caplog.at_level(logging.ERROR):
        assert main(cli_args(data, tmp_path / "tok", tmp_path / "out", train=missing)) == 1
    assert [r.getMessage() for r in caplog.records] == [f"videollava align: {missing}: caption file not found"]
    caplog.clear()
    images_only = tmp_path / "images_only.json"
    items = [x for x in json.loads((data / "stage1.json").read_text()) if "image" in x]
    images_only.write_text(json.dumps(items))
    with caplog.at_level(logging.ERROR):
        assert main(cli_args(data, tmp_path / "tok", tmp_path / "out", train=images_only)) == 1
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(images_only) in message and "no video captions" in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main([*cli_args(data, tmp_path / "tok", tmp_path / "out"), "--video-stage-text", "thawed"]) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "videollava align: AlignConfig.video_stage_text must be 'frozen' or 'joint', got 'thawed'"]
    assert not (tmp_path / "out").exists()


def test_hard_negatives_are_one_word_neighbours_and_batches_stay_distinct():
    captions = ["A red square moves up.", "A red square moves left.", "A blue circle stays still.",
                "A red square moves up.", "Two shapes: a red square and a blue circle.", "A red circle moves up."]
    near = caption_neighbours(captions)
    assert sorted(near["A red square moves up."]) == [1, 5]  # "left" for "up", "circle" for "square"
    assert sorted(near["A red square moves left."]) == [0, 3]
    assert near["A blue circle stays still."] == []
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = distinct_caption_batch(captions, 4, generator, near, hard=1.0)
        assert len({captions[i] for i in batch}) == len(batch) == 4
    plain = [distinct_caption_batch(captions, 2, torch.Generator().manual_seed(s)) for s in range(30)]
    hard = [distinct_caption_batch(captions, 2, torch.Generator().manual_seed(s), near, 1.0) for s in range(30)]

    def neighbour_pairs(batches: list[list[int]]) -> int:
        return sum(any(j in near[captions[i]] for j in b for i in b) for b in batches)

    # a random item with a neighbour is always followed by one; without hard negatives that is left to chance
    assert neighbour_pairs(hard) == sum(bool(near[captions[b[0]]]) for b in hard)
    assert neighbour_pairs(plain) < neighbour_pairs(hard)
