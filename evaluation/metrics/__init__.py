"""Per-benchmark scoring rules, each a pure function of predictions (no model, no network)."""

from .choice import choice_accuracy, extract_choice_letter
from .exact import exact_match_metrics, normalize_short_answer
from .pope import pope_metrics, pope_yes_no
from .video_qa import parse_judgement, video_qa_metrics
from .vqa import gqa_accuracy, normalize_vqa_answer, vqa_soft_accuracy, vqa_soft_score


__all__ = [
    "choice_accuracy",
    "exact_match_metrics",
    "extract_choice_letter",
    "gqa_accuracy",
    "normalize_short_answer",
    "normalize_vqa_answer",
    "parse_judgement",
    "pope_metrics",
    "pope_yes_no",
    "video_qa_metrics",
    "vqa_soft_accuracy",
    "vqa_soft_score",
]
