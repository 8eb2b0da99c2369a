"""Markdown report in the paper's layout (Video-LLaVA Tables 2-4), ours next to the published numbers.

Run as:
    videollava eval --report OUT_DIR [OUT_DIR ...]      # each OUT_DIR holds a metrics.json from `videollava eval`
"""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .tasks import TASKS


# As reported in the paper (Video-LLaVA, Lin et al. 2023); video QA is (accuracy %, GPT-3.5 score 0-5).
PAPER_VIDEO = {"MSVD-QA": (70.7, 3.9), "MSRVTT-QA": (59.2, 3.5), "TGIF-QA": (70.0, 4.0), "ActivityNet-QA": (45.3, 3.3)}
PAPER_IMAGE_QA = {"VQAv2": 74.7, "GQA": 60.3, "VizWiz": 48.1, "SciQA-IMG": 66.4, "TextVQA": 51.8}
PAPER_TOOLKIT = {"POPE": 84.4, "MMBench": 60.9, "LLaVA-W": 73.1, "MM-Vet": 32.0}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _count(result: Mapping[str, Any]) -> str:
    """How many predictions a score rests on: `(judged 118/120)` for judged tasks, `(n=500)` otherwise."""
    metrics = result.get("metrics") or {}
    if result.get("judge") is not None or "judge_failures" in metrics:
        if "count" not in metrics:
            return " (judged ?)"
        return f" (judged {metrics['count']}/{metrics['count'] + metrics.get('judge_failures', 0)})"
    return f" (n={metrics['count']})" if "count" in metrics else ""


def load_results(dirs: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read `metrics.json` from each output directory (missing ones raise, naming the directory)."""
    results = []
    for d in dirs:
        path = Path(d) / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `videollava eval` into {d} first")
        results.append(json.loads(path.read_text(encoding="utf-8")))
    return results


def render_report(results: Iterable[Mapping[str, Any]]) -> str:
    """Render Tables 2-4 for the tasks in `results`; tasks not run show "–"; our extra tasks get their own table."""
    ours: dict[str, Mapping[str, float]] = {}
    counts: dict[str, str] = {}
    extra: list[Mapping[str, Any]] = []
    judges = set()
    for r in results:
        task = TASKS.get(r["task"])
        if task is None or task.paper_column is None:
            extra.append(r)
            continue
        ours[task.paper_column] = r["headline"]
        counts[task.paper_column] = _count(r)
        if r.get("judge"):
            j = r["judge"]
            judges.add(f"{j['model']} @ {j['base_url']} (served: {', '.join(j.get('served_models') or ['?'])})")

    lines = ["## Zero-shot video QA (paper Table 2)", "", "| | " + " | ".join(PAPER_VIDEO) + " |",
             "|---|" + "---|" * len(PAPER_VIDEO)]  # fmt: skip
    lines.append("| Video-LLaVA, as reported in the paper (Acc / Score) | "
                 + " | ".join(f"{a} / {s}" for a, s in PAPER_VIDEO.values()) + " |")  # fmt: skip
    row = [f"{_fmt(ours[c]['accuracy'])} / {_fmt(ours[c]['score'], 2)}{counts[c]}" if c in ours else "–"
           for c in PAPER_VIDEO]
    lines += ["| ours (Acc / Score) | " + " | ".join(row) + " |", ""]
    if judges:
        lines += ["Judge: " + "; ".join(sorted(judges)) + ". The paper's judge was gpt-3.5-turbo (2023 snapshot).", ""]

    for title, paper in (("Image QA (paper Table 3)", PAPER_IMAGE_QA), ("Benchmark toolkits (paper Table 4)", PAPER_TOOLKIT)):
        cols = list(paper)
        lines += [f"## {title}", "", "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        lines.append("| Video-LLaVA, as reported in the paper | " + " | ".join(_fmt(paper[c]) for c in cols) + " |")
        vals = [_fmt(next(iter(ours[c].values()))) + counts[c] if c in ours else "–" for c in cols]
        lines += ["| ours | " + " | ".join(vals) + " |", ""]
    lines.append("POPE: mean F1 (%) over the categories run. VQAv2 / VizWiz / TextVQA: VQA soft accuracy on the "
                 "split scored locally (the paper's VQAv2 / VizWiz numbers are test-dev server scores).")  # fmt: skip

    if extra:
        lines += ["", "## Other tasks (not in the paper)", "", "| task | metric | value |", "|---|---|---|"]
        for r in extra:
            for k, v in r["metrics"].items():
                if isinstance(v, float):
                    lines.append(f"| {r['task']} | {k} | {v * 100 if 'accuracy' in k else v:.1f} |")
                elif isinstance(v, int) and not isinstance(v, bool):
                    lines.append(f"| {r['task']} | {k} | {v} |")
    return "\n".join(lines) + "\n"
