"""Multiple-choice letter extraction (Video-LLaVA/LLaVA `eval_science_qa.py`) and accuracy."""

import re
from collections.abc import Iterable, Mapping


LETTER_SUFFIX = "Answer with the option's letter from the given choices directly."
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def extract_choice_letter(pred: str, num_options: int) -> str:
    """The original rule: the bare letter, a leading "X. ", or a single "The answer is X."; else "FAILED"."""
    options = OPTION_LETTERS[:num_options]
    text = pred.strip()
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    if len(found) == 1:
        return found[0]
    return "FAILED"


def choice_accuracy(records: Iterable[Mapping]) -> dict[str, float]:
    """Accuracy over `{"pred", "answer": letter, "options": [...]}`; an unparseable answer counts as wrong."""
    correct = total = failed = 0
    for rec in records:
        letter = extract_choice_letter(str(rec["pred"]), len(rec.get("options") or OPTION_LETTERS))
        failed += letter == "FAILED"
        correct += letter == str(rec["answer"]).strip().upper()
        total += 1
    return {"accuracy": correct / total if total else 0.0, "failed_to_parse": failed, "count": total}
