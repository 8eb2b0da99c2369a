"""Metrics against hand-computed values on the fixture files."""

from pathlib import Path

import pytest

from evaluation.metrics import (
    choice_accuracy,
    exact_match_metrics,
    extract_choice_letter,
    gqa_accuracy,
    normalize_vqa_answer,
    parse_judgement,
    pope_yes_no,
    video_qa_metrics,
    vqa_soft_accuracy,
)
from evaluation.metrics.video_qa import JudgementParseError
from evaluation.predictions import read_predictions
from evaluation.tasks import TASKS
from evaluation.scoring import score_predictions


FIX = Path(__file__).parent / "fixtures"


def test_pope_rule_and_metrics_by_hand():
    assert pope_yes_no("No, there is not.") == "no"
    assert pope_yes_no("There is no dog") == "no"
    assert pope_yes_no("Yes. No.") == "yes"  # only the first sentence counts
    result = score_predictions(TASKS["pope"], read_predictions(FIX / "pope_predictions.jsonl"))
    rnd, pop = result["metrics"]["categories"]["random"], result["metrics"]["categories"]["popular"]
    # random: TP=2 FN=1 TN=1 FP=1
    assert rnd["accuracy"] == pytest.approx(3 / 5)
    assert rnd["precision"] == pytest.approx(2 / 3) and rnd["recall"] == pytest.approx(2 / 3)
    assert rnd["f1"] == pytest.approx(2 / 3) and rnd["yes_ratio"] == pytest.approx(3 / 5)
    # popular: TP=1 TN=2
    assert pop == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": pytest.approx(1 / 3),
                   "count": 3}  # fmt: skip
    assert result["headline"]["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_choice_extraction_original_rule():
    assert extract_choice_letter("A", 2) == "A"
    assert extract_choice_letter("C", 2) == "FAILED"  # not among the offered options
    assert extract_choice_letter("B. because", 3) == "B"
    assert extract_choice_letter("The answer is C.", 3) == "C"
    m = choice_accuracy(read_predictions(FIX / "scienceqa_predictions.jsonl"))
    assert m == {"accuracy": 0.5, "failed_to_parse": 1, "count": 4}


def test_vqa_soft_accuracy_and_normalisation():
    assert normalize_vqa_answer("The Two dogs!") == "2 dogs"
    assert normalize_vqa_answer("isnt") == "isn't"
    # pred "Two" -> "2": two annotators said 2 (each LOO subset: 1/3), eight said 3 (2/3) -> 0.6; "Yes." -> 1.0
    m = vqa_soft_accuracy(read_predictions(FIX / "vqav2_predictions.jsonl"))
    assert m["accuracy"] == pytest.approx((0.6 + 1.0) / 2)


def test_gqa_and_exact_match():
    assert gqa_accuracy(read_predictions(FIX / "gqa_predictions.jsonl"))["accuracy"] == 0.5
    m = exact_match_metrics(read_predictions(FIX / "shapes_predictions.jsonl"))
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy_static"] == 0.5 and m["accuracy_temporal"] == 1.0
    assert m["count_static"] == 2 and m["count_temporal"] == 1


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("{'pred': 'yes', 'score': 4.8}", {"pred": "yes", "score": 4}),  # the prompt's own example; int() truncates
        ('```python\n{"pred": "no", "score": "2"}\n```', {"pred": "no", "score": 2}),
        ("Sure! {'pred': 'Yes', 'score': 5} Hope this helps.", {"pred": "yes", "score": 5}),
        ("pred: no, score: 0", {"pred": "no", "score": 0}),
    ],
)
def test_parse_judgement_robust(reply, expected):
    assert parse_judgement(reply) == expected


def test_parse_judgement_rejects_prose():
    with pytest.raises(JudgementParseError):
        parse_judgement("They match well.")


def test_video_qa_metrics_by_hand():
    js = [{"pred": "yes", "score": 5}, {"pred": "no", "score": 1}, {"pred": "yes", "score": 4},
          {"pred": "no", "score": 2}, {"pred": None, "score": None}]  # fmt: skip
    m = video_qa_metrics(js)
    assert m["accuracy"] == 0.5 and m["average_score"] == 3.0 and m["judge_failures"] == 1 and m["count"] == 4
