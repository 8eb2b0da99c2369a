"""Benchmark loaders on miniature copies of each documented layout."""

import json

import pytest

from evaluation.tasks import DataLayoutError, TASKS, get_task


def test_video_qa_layout(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v_abc.mp4").write_bytes(b"")
    (tmp_path / "test_q.json").write_text(json.dumps([{"video_name": "abc", "question": "what?", "question_id": 7}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "dog", "question_id": 7, "type": 0}]))
    with pytest.raises(DataLayoutError, match="question 7: no video"):
        TASKS["msvd_qa"].loader(tmp_path)  # MSVD has no v_ prefix
    (s,) = TASKS["activitynet_qa"].loader(tmp_path)
    assert (s.id, s.prompt, s.answer, s.media[0][0]) == ("7", "what?", "dog", "video")


def test_pope_layout(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "x.jpg").write_bytes(b"")
    rows = [{"question_id": 1, "image": "x.jpg", "text": "Is there a dog in the image?", "label": "yes"}]
    (tmp_path / "coco_pope_adversarial.json").write_text("\n".join(json.dumps(r) for r in rows))
    (s,) = TASKS["pope"].loader(tmp_path)
    assert s.id == "adversarial-1" and s.extra == {"category": "adversarial"}
    assert s.prompt.endswith("\nAnswer the question using a single word or phrase.")


def test_scienceqa_layout_keeps_image_questions(tmp_path):
    problems = {
        "1": {"question": "Which is a mammal?", "choices": ["cat", "fish"], "answer": 0, "hint": "", "image": "image.png"},
        "2": {"question": "No image", "choices": ["a", "b"], "answer": 1, "hint": "h", "image": None},
    }  # fmt: skip
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    (tmp_path / "images" / "test" / "1").mkdir(parents=True)
    (tmp_path / "images" / "test" / "1" / "image.png").write_bytes(b"")
    (s,) = TASKS["scienceqa_img"].loader(tmp_path)
    assert s.prompt == ("Context: N/A\nQuestion: Which is a mammal?\nOptions: (A) cat (B) fish\n"
                        "Answer with the option's letter from the given choices directly.")  # fmt: skip
    assert s.answer == "A"


def test_missing_file_and_unknown_task_are_named(tmp_path):
    with pytest.raises(DataLayoutError, match="test_q.json"):
        TASKS["tgif_qa"].loader(tmp_path)
    with pytest.raises(KeyError, match="known: activitynet_qa"):
        get_task("msvd")


def test_shapes_multi_turn_items_become_one_question_each(tmp_path):
    from evaluation.tasks import load_shapes

    (tmp_path / "clip.mp4").write_bytes(b"")
    row = {"id": "h1", "video": "clip.mp4", "question_types": ["static", "temporal"],
           "conversations": [{"from": "human", "value": "<video>\nWhat colour is the shape?"},
                             {"from": "gpt", "value": "red"},
                             {"from": "human", "value": "Which way does the shape move?"},
                             {"from": "gpt", "value": "left"}]}  # fmt: skip
    (tmp_path / "heldout.json").write_text(json.dumps([row]))
    samples = load_shapes(tmp_path)
    assert [(s.id, s.prompt, s.answer, s.extra["question_type"]) for s in samples] == [
        ("h1#0", "What colour is the shape?", "red", "static"),
        ("h1#1", "Which way does the shape move?", "left", "temporal"),
    ]
    assert all(s.media == samples[0].media for s in samples)
