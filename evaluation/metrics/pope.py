"""POPE yes/no rule and metrics, as in Video-LLaVA `videollava/eval/eval_pope.py` (SPEC §9.2)."""

from collections.abc import Iterable, Mapping


def pope_yes_no(text: str) -> str:
    """The original rule: keep text before the first '.', drop ',', split on ' '; any of No/not/no -> "no"."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if any(w in ("No", "not", "no") for w in words) else "yes"


def pope_metrics(records: Iterable[Mapping]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio with "yes" as the positive class.

    Args:
        records: dicts with `pred` (model text) and `answer` (label, "no" -> 0, anything else -> 1).
    """
    tp = fp = tn = fn = 0
    for rec in records:
        pred = pope_yes_no(str(rec["pred"])) == "yes"
        label = str(rec["answer"]).strip().lower() != "no"
        tp += pred and label
        fp += pred and not label
        tn += (not pred) and (not label)
        fn += (not pred) and label
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
        "count": n,
    }
