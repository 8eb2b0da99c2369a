"""Document functions of the `videollava_samples` lmms-eval task (loaded by lmms-eval from this file's path)."""

from pathlib import Path
from typing import Any


SAMPLES_DIR = Path(__file__).resolve().parents[4] / "videollava" / "samples"


def process_docs(dataset: Any) -> Any:
    """One document per question: samples.json holds one entry per medium with a list of questions."""
    import datasets

    rows = [{"id": f"{entry['file']}#{i}", "file": entry["file"], "question": qa["question"], "answer": qa["answer"],
             "question_type": qa["question_type"], "model_answer": qa.get("model_answer", "")}
            for entry in dataset for i, qa in enumerate(entry["questions"])]  # fmt: skip
    return datasets.Dataset.from_list(rows)


def doc_to_visual(doc: dict) -> list[str]:
    """The medium's path: `videollava_lb` reads a video suffix as a video, anything else as an image."""
    return [str(SAMPLES_DIR / doc["file"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": float(results[0].strip() == doc["answer"])}
