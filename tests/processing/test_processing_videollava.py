"""LanguageBindVideoLlavaProcessor: token expansion from the config, Vicuna-v1 chat template, masks, batching, truncation, saving."""

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from processing import DEFAULT_SYSTEM_PROMPT, LanguageBindImageProcessor, LanguageBindVideoLlavaProcessor, build_processor
from tests.fresh_process import run_fresh
from tests.processing.media import make_video
from tests.tiny import tiny_config


SYSTEM = DEFAULT_SYSTEM_PROMPT


@pytest.fixture
def processor(config, tokenizer):
    return build_processor(config, tokenizer)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return [make_video(root / "a.mp4", num_frames=12), make_video(root / "b.webm", 30, (40, 30), "libvpx-vp9")]


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8))


def test_counts_come_from_config(processor, config):
    assert (processor.image_seq_length, processor.frame_seq_length, processor.num_frames) == (4, 5, 2)
    assert config.video_seq_length == processor.frame_seq_length * processor.num_frames
    assert processor.image_token_id == config.image_token_index and processor.video_token_id == config.video_token_index
    assert processor.image_processor.crop_size["height"] == config.image_config.image_size


def test_call_expands_placeholders(processor, videos):
    out = processor(
        text=["USER: <image>\nwhat ? ASSISTANT:", "USER: <video>\n<video>\nwhat ? ASSISTANT:"],
        images=[_image()],
        videos=[str(videos[0]), np.zeros((7, 20, 30, 3), dtype=np.uint8)],
        return_tensors="pt",
        padding=True,
    )
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "pixel_values_videos"}
    assert out["pixel_values"].shape == (1, 3, 28, 28)
    assert out["pixel_values_videos"].shape == (2, 2, 3, 28, 28)
    assert (out["input_ids"][0] == processor.image_token_id).sum() == 4
    assert (out["input_ids"][1] == processor.video_token_id).sum() == 2 * 2 * 5
    assert processor.tokenizer.padding_side == "left" and out["attention_mask"][0, 0] == 0  # left padding


def test_batches_of_different_sources_and_frame_counts(processor, videos):
    sources = [str(videos[0]), videos[1].read_bytes(), [_image(i) for i in range(5)], torch.zeros(3, 10, 12, 3)]
    out = processor(text=["<video>"] * 4, videos=sources, return_tensors="pt", padding=True)
    assert out["pixel_values_videos"].shape == (4, 2, 3, 28, 28)
    single = processor(text="<video>", videos=str(videos[0]), return_tensors="pt")
    torch.testing.assert_close(single["pixel_values_videos"][0], out["pixel_values_videos"][0])


def test_placeholder_count_mismatch_names_both_counts(processor, videos):
    with pytest.raises(ValueError, match=r"2 <video> placeholders.*1 videos"):
        processor(text="<video> <video>", videos=[str(videos[0])])
    with pytest.raises(ValueError, match=r"1 <image> tokens and 2 images"):
        processor(text="<image>", images=[_image(), _image(1)])


def test_chat_template_single_turn_byte_for_byte(processor, videos):
    messages = [
        {"role": "user", "content": [{"type": "video", "video": str(videos[0])}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A dog."},
    ]
    assert processor.apply_chat_template(messages) == f"{SYSTEM} USER: <video>\nWhat? ASSISTANT: A dog.</s>"


def test_chat_template_multi_turn_system_and_generation_prompt(processor):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
        {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == "Be brief. USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>USER: q3 ASSISTANT:"
    default = processor.apply_chat_template(messages[1:2], add_generation_prompt=True)
    assert default == f"{SYSTEM} USER: <image>\nq1 ASSISTANT:"


def test_assistant_masks_cover_answers_and_eos(processor, videos):
    conversations = [
        [
            {"role": "user", "content": [{"type": "video", "video": str(videos[0])}, {"type": "text", "text": "what ?"}]},
            {"role": "assistant", "content": "a red square"},
            {"role": "user", "content": "what colour ?"},
            {"role": "assistant", "content": "red"},
        ],
        [
            {"role": "user", "content": [{"type": "image", "image": _image()}, {"type": "text", "text": "describe it"}]},
            {"role": "assistant", "content": "a blue circle"},
        ],
    ]
    out = processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True,
        processor_kwargs={"padding": True},
    )
    assert out["pixel_values_videos"].shape == (1, 2, 3, 28, 28) and out["pixel_values"].shape == (1, 3, 28, 28)
    masked = [processor.tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(out["input_ids"], out["assistant_masks"])]
    assert masked == ["a red square </s> red </s>", "a blue circle </s>"]
    assert (out["input_ids"][0] == processor.video_token_id).sum() == 10


def test_truncation_never_cuts_a_visual_span(processor):
    text = ["USER: <image>\nwhat is in this image ? ASSISTANT: a red square", "USER: what ? ASSISTANT: yes"]
    full = processor(text=text, images=[_image()])["input_ids"]
    with pytest.raises(ValueError, match="Sample 0 .*visual"):
        processor(text=text, images=[_image()], truncation=True, max_length=4)
    ok = processor(text=text, images=[_image()], truncation=True, max_length=len(full[0]) - 2, padding=True,
                   return_tensors="pt")
    assert ok["input_ids"].shape[1] == len(full[0]) - 2
    assert (ok["input_ids"][0] == processor.image_token_id).sum() == 4
    processor.visual_truncation = "keep"
    kept = processor(text=text, images=[_image()], truncation=True, max_length=4, padding=True, return_tensors="pt")
    assert (kept["input_ids"][0] == processor.image_token_id).sum() == 4  # whole span kept, text after it cut
    assert kept["input_ids"].shape[1] == full[0].index(processor.image_token_id) + 4


def test_save_and_load_round_trip(processor, tmp_path, videos):
    LanguageBindVideoLlavaProcessor.register_for_auto_class("AutoProcessor")
    LanguageBindImageProcessor.register_for_auto_class("AutoImageProcessor")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["frame_seq_length"] == 5 and saved["auto_map"]["AutoProcessor"].startswith("processing_videollava.")
    for name in ("processing_videollava.py", "image_processing_videollava.py", "video_io.py", "video_decode.py",
                 "video_processing_videollava.py", "chat_template.jinja"):
        assert (tmp_path / name).exists(), name
    loaded = LanguageBindVideoLlavaProcessor.from_pretrained(tmp_path, trust_remote_code=True)  # image processor is Hub code
    assert loaded.chat_template == processor.chat_template and loaded.tokenizer.padding_side == "left"
    expected = processor(text="<video> <image>", videos=[str(videos[1])], images=[_image()], return_tensors="pt")
    actual = loaded(text="<video> <image>", videos=[str(videos[1])], images=[_image()], return_tensors="pt")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


FRESH = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np, torch
    warnings.simplefilter("error")
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    out = processor(text="<video> <image>", videos=[sys.argv[2]], images=[np.zeros((30, 40, 3), np.uint8)],
                    return_tensors="pt")
    torch.save(dict(out), sys.argv[3])
    print(type(processor).__name__, processor.num_frames)
    """
)


def test_fresh_process_autoprocessor_without_our_package(processor, tmp_path, videos):
    LanguageBindVideoLlavaProcessor.register_for_auto_class("AutoProcessor")
    LanguageBindImageProcessor.register_for_auto_class("AutoImageProcessor")
    hub = tmp_path / "hub"
    processor.save_pretrained(hub)
    result = run_fresh(FRESH, hub, videos[0], tmp_path / "out.pt", cwd=tmp_path,
                       env={"HF_MODULES_CACHE": str(tmp_path / "modules")}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LanguageBindVideoLlavaProcessor 2" in result.stdout and "warn" not in result.stderr.lower()
    expected = processor(text="<video> <image>", videos=[str(videos[0])], images=[np.zeros((30, 40, 3), np.uint8)],
                         return_tensors="pt")
    actual = torch.load(tmp_path / "out.pt")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


def test_build_processor_follows_config(tokenizer):
    config = tiny_config(num_frames=3, video_feature_select="patch")
    processor = build_processor(config, tokenizer)
    assert processor.num_frames == 3 and processor.frame_seq_length == 4
    out = processor(text="<video>", videos=[np.zeros((9, 20, 20, 3), np.uint8)], return_tensors="pt")
    assert (out["input_ids"] == processor.video_token_id).sum() == config.video_seq_length == 12
