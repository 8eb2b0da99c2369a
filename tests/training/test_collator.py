"""Label masking token by token, media skipping, strict mode and truncation reporting."""

import pytest
import torch

from tests.tiny import tiny_config
from tests.training.fakes import real_processor, write_llava_json
from training.collator import IGNORE_INDEX, VideoLlavaCollator, build_labels
from training.data import DataSource, load_training_data
from training.media import MediaError, SkipLedger, read_skip_log


@pytest.fixture
def rows(tmp_path):
    path = write_llava_json(str(tmp_path), n=4)
    return load_training_data([DataSource(path, f"{tmp_path}/images", f"{tmp_path}/videos")])


def test_build_labels_unit():
    ids = torch.tensor([1, 10, 11, 7, 20, 21, 2, 12, 2, 0])
    assistant = torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 0, 0])  # template left </s> outside the generation block
    labels = build_labels(ids, assistant, media_token_ids=[7], eos_token_id=2, attention_mask=(ids != 0).long())
    assert labels.tolist() == [-100, -100, -100, -100, 20, 21, 2, -100, -100, -100]


def test_multiturn_image_video_masks_token_by_token(rows):
    processor = real_processor()
    tok = processor.tokenizer
    collator = VideoLlavaCollator(processor, num_frames=2)
    batch = collator([rows[2]])  # video + image, two turns
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    # expected: supervised exactly where the token lies inside "ASSISTANT : <answer> </s>" after the header
    expected, in_answer = [], False
    for i, t in enumerate(tokens):
        if i >= 2 and tokens[i - 2 : i] == ["ASSISTANT", ":"]:
            in_answer = True
        expected.append(in_answer)
        if t == "</s>":
            in_answer = False
    for i, (t, lab, exp) in enumerate(zip(tokens, labels.tolist(), expected)):
        assert (lab != IGNORE_INDEX) == exp, f"token {i} {t!r}: label {lab}"
        if exp:
            assert lab == ids[i]
    assert tok.decode(ids[labels != IGNORE_INDEX]) == "blue . </s> a square . </s>"
    n_media = int(((ids == processor.image_token_id) | (ids == processor.video_token_id)).sum())
    assert n_media == tiny_config().image_seq_length + tiny_config().video_seq_length
    assert batch["pixel_values"].shape == (1, 3, 28, 28)
    assert batch["pixel_values_videos"].shape == (1, 2, 3, 28, 28)


def test_mixed_batch_shapes_and_padding(rows):
    collator = VideoLlavaCollator(real_processor(), num_frames=2)
    batch = collator([rows[i] for i in range(4)])
    assert batch["pixel_values"].shape[0] == 2 and batch["pixel_values_videos"].shape[0] == 2
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()


def test_missing_media_skipped_counted_and_strict(rows, tmp_path):
    bad = dict(rows[1]) | {"videos": [str(tmp_path / "videos/nope.mp4")]}
    ledger = SkipLedger(str(tmp_path / "out"), max_skipped_fraction=1.0)
    collator = VideoLlavaCollator(real_processor(), num_frames=2, ledger=ledger)
    batch = collator([rows[0], bad])
    assert batch["input_ids"].shape[0] == 2 and "pixel_values_videos" not in batch  # replaced by rows[0]
    assert ledger.skipped["media"] == 1
    assert read_skip_log(str(tmp_path / "out"))[0]["id"] == "s1"
    strict = VideoLlavaCollator(real_processor(), num_frames=2, strict=True)
    with pytest.raises(MediaError, match="sample s1 .*nope.mp4"):
        strict([rows[0], bad])


def test_corrupt_video_and_threshold(rows, tmp_path):
    broken = tmp_path / "videos/broken.mp4"
    broken.write_bytes(b"not a video")
    bad = dict(rows[1]) | {"videos": [str(broken)]}
    collator = VideoLlavaCollator(real_processor(), num_frames=2, ledger=SkipLedger(None, 0.2, min_seen=2))
    with pytest.raises(MediaError, match="max_skipped_fraction"):
        collator([rows[0], bad, bad])


def test_truncation_reported_never_silent(rows, tmp_path):
    processor = real_processor()
    full = VideoLlavaCollator(processor, num_frames=2).encode(rows[0])
    answer_start = int((full["labels"] != IGNORE_INDEX).nonzero()[0])
    ledger = SkipLedger(None, max_skipped_fraction=1.0)
    # cut right before the first answer token: the sample must be dropped and reported
    cut = VideoLlavaCollator(processor, num_frames=2, max_length=answer_start, ledger=ledger)
    batch = cut([rows[0], rows[3]])
    assert ledger.skipped["length"] >= 1 and batch["input_ids"].shape[1] <= len(full["input_ids"])
    # cut inside the visual span: also dropped
    with pytest.raises(ValueError, match="inside its visual tokens"):
        VideoLlavaCollator(processor, num_frames=2, max_length=10).encode(rows[0])
    # cut inside the second answer: kept, truncated, still supervised
    keep = VideoLlavaCollator(processor, num_frames=2, max_length=len(full["input_ids"]) - 2)
    sample = keep.encode(rows[0])
    assert len(sample["input_ids"]) == len(full["input_ids"]) - 2 and (sample["labels"] != IGNORE_INDEX).any()


def test_all_skipped_batch_raises(rows, tmp_path):
    bad = dict(rows[0]) | {"images": [str(tmp_path / "nope.png")]}
    collator = VideoLlavaCollator(real_processor(), num_frames=2, ledger=SkipLedger(None, 1.0))
    with pytest.raises(MediaError, match="every sample"):
        collator([bad])
