"""Exact-match scoring for the synthetic shapes set, split by `question_type` (static / temporal)."""

import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_short_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def exact_match_metrics(records: Iterable[Mapping]) -> dict[str, float]:
    """Overall and per-`question_type` exact-match accuracy after `normalize_short_answer`."""
    hits: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        ok = int(normalize_short_answer(str(rec["pred"])) == normalize_short_answer(str(rec["answer"])))
        hits["all"].append(ok)
        hits[str(rec.get("question_type") or "untyped")].append(ok)
    out: dict[str, float] = {"accuracy": 0.0}
    for group, values in sorted(hits.items()):
        key = "accuracy" if group == "all" else f"accuracy_{group}"
        out[key] = sum(values) / len(values)
        if group != "all":
            out[f"count_{group}"] = len(values)
    out["count"] = len(hits["all"])
    return out
