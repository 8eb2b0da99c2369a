"""Video-QA metrics over judge verdicts (Video-ChatGPT protocol as in Video-LLaVA `eval_video_qa.py`, SPEC §9.1).

accuracy = yes / (yes + no), with "yes" in pred.lower() -> yes, elif "no" in pred.lower() -> no;
average_score = sum(int(score)) / count over all judged samples.
"""

import ast
import json
import re
from collections.abc import Iterable, Mapping


_DICT = re.compile(r"\{[^{}]*\}", re.S)
_PRED = re.compile(r"""['"]?pred['"]?\s*[:=]\s*['"]?\s*(yes|no)\b""", re.I)
_SCORE = re.compile(r"""['"]?score['"]?\s*[:=]\s*['"]?\s*(-?\d+(?:\.\d+)?)""", re.I)


class JudgementParseError(ValueError):
    """The judge's reply holds no usable {'pred': yes/no, 'score': number}."""


def parse_judgement(text: str) -> dict[str, object]:
    """Parse a judge reply into `{"pred": "yes"|"no", "score": int}`.

    Tries, in order: `ast.literal_eval` of the first `{...}` (the original parser), JSON, then a lenient regex
    (handles code fences, prose around the dict, `score: "4"`). The score is truncated with `int()` as the original.

    Raises:
        JudgementParseError: when neither a yes/no nor a numeric score can be found.
    """
    candidates = [m.group(0) for m in _DICT.finditer(text)]
    for cand in candidates:
        for loader in (ast.literal_eval, json.loads):
            try:
                obj = loader(cand)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(obj, dict) and "pred" in obj and "score" in obj:
                pred = str(obj["pred"]).strip().lower()
                try:
                    score = int(float(obj["score"]))
                except (TypeError, ValueError):
                    break
                if "yes" in pred or "no" in pred:
                    return {"pred": "yes" if "yes" in pred else "no", "score": score}
    pred_m, score_m = _PRED.search(text), _SCORE.search(text)
    if pred_m and score_m:
        return {"pred": pred_m.group(1).lower(), "score": int(float(score_m.group(1)))}
    raise JudgementParseError(f"cannot parse judge reply: {text[:200]!r}")


def video_qa_metrics(judgements: Iterable[Mapping]) -> dict[str, float]:
    """Accuracy and average score from `{"pred": str, "score": int}` judgements (failed ones excluded, counted)."""
    yes = no = score_sum = count = failed = 0
    for j in judgements:
        if j.get("pred") is None or j.get("score") is None:
            failed += 1
            continue
        pred = str(j["pred"]).lower()
        if "yes" in pred:
            yes += 1
        elif "no" in pred:
            no += 1
        score_sum += int(j["score"])
        count += 1
    return {
        "accuracy": yes / (yes + no) if yes + no else 0.0,
        "average_score": score_sum / count if count else 0.0,
        "yes": yes,
        "no": no,
        "count": count,
        "judge_failures": failed,
    }
