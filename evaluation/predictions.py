"""Predictions files: crash-safe jsonl appends, tolerant reads, and the original repository's output format.

Our records are `{"id", "question", "answer", "pred", ...extra}`; the original Video-LLaVA video-QA output
(`merge.jsonl`) has the same four keys, so both re-score the same way. `question_id` / `text` are accepted as
aliases of `id` / `pred` (LLaVA image-benchmark answer files).
"""

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


logger = logging.getLogger(__name__)
_ALIASES = {"question_id": "id", "text": "pred"}


def read_predictions(path: str | os.PathLike, strict: bool = False) -> list[dict]:
    """Read a jsonl (or a JSON list) of predictions, normalising aliases.

    A damaged line (e.g. the last one after a kill) is skipped with a warning, or raises with `strict=True`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if strict:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
                logger.warning("%s:%d: skipping a damaged line (interrupted write?)", path, n)
    out = []
    for n, row in enumerate(rows, 1):
        row = {_ALIASES.get(k, k) if _ALIASES.get(k, k) not in row else k: v for k, v in row.items()}
        missing = [k for k in ("id", "pred") if k not in row]
        if missing:
            raise ValueError(f"{path}: record {n} lacks {missing} (keys: {sorted(row)})")
        row["id"] = str(row["id"])
        out.append(row)
    return out


def append_records(path: str | os.PathLike, records: Iterable[Mapping]) -> None:
    """Append records as jsonl and fsync, repairing a torn last line first so a crash loses at most one batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        for rec in records:
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def write_records(path: str | os.PathLike, records: Iterable[Mapping]) -> None:
    """Write records as jsonl atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write pretty JSON atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
