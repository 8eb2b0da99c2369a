"""Training data: LLaVA-style JSON/JSONL and `datasets` "messages + images/videos" rows, normalised and mixed.

Every source is turned into one row layout, which is what the collator reads:

    {"id": str, "source": str,
     "messages": [{"role": "user" | "assistant", "content": [{"type": "text" | "image" | "video", "text": str}]}],
     "images": [str, ...],   # resolved paths (or PIL images for in-memory `datasets`)
     "videos": [str, ...],
     "modality_length": int} # word count; negative for text-only rows (SPEC §8.4 grouping)

LLaVA format (SPEC §8.3): `{"id", "image": path | [paths], "video": path | [paths], "conversations": [{"from":
"human" | "gpt", "value": "<image>\\n..."}]}`; paths are relative to the image / video folder. Media is *not*
opened here: the collator decodes it lazily, so a missing file costs one skipped sample, not a failed load.

Example:
    >>> ds = load_training_data([DataSource("train.json", image_folder="imgs", video_folder="vids")])
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_dataset

from .media import MediaError, SkipLedger, resolve_media_path


logger = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"(<image>|<video>)")
# Explicit schema so sources with and without media concatenate (an all-empty `images` column would infer `null`).
FEATURES = Features(
    {
        "id": Value("string"),
        "source": Value("string"),
        "messages": List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}),
        "images": List(Value("string")),
        "videos": List(Value("string")),
        "modality_length": Value("int64"),
    }
)
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class DataFormatError(ValueError):
    """A data record that cannot be turned into a training sample; the message names the file and sample."""


@dataclass
class DataSource:
    """One data file (or Hub dataset id) with its media folders and mixing weight.

    Args:
        path: `.json` / `.jsonl` file, a folder `datasets` can load, or a Hub dataset id.
        image_folder / video_folder: roots that relative media paths are resolved against (and confined to).
        weight: sampling weight when mixing; 2.0 repeats the source twice, 0.5 draws half of it (seeded).
        split: split to read for Hub ids / folders.
    """

    path: str
    image_folder: str | None = None
    video_folder: str | None = None
    weight: float = 1.0
    split: str = "train"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _split_placeholders(text: str) -> list[dict[str, str]]:
    """`"<video>\\nWhat?"` -> `[{"type": "video"}, {"type": "text", "text": "What?"}]` (the template adds the newline)."""
    blocks: list[dict[str, str]] = []
    for piece in PLACEHOLDER.split(text):
        if piece in ("<image>", "<video>"):
            blocks.append({"type": piece[1:-1], "text": ""})
        else:
            if blocks and blocks[-1]["type"] != "text":
                piece = piece.removeprefix("\n")
            if piece.strip():
                blocks.append({"type": "text", "text": piece.strip()})
    return blocks


def _word_count(messages: list[dict]) -> int:
    return sum(len(b["text"].split()) for m in messages for b in m["content"] if b["type"] == "text")


def _finish_row(sample_id: str, source: str, messages: list[dict], images: list, videos: list) -> dict[str, Any]:
    """Insert missing placeholders, check counts and roles, add the grouping length."""
    if not messages or messages[0]["role"] != "user":
        raise DataFormatError("conversation must start with a user/human turn")
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise DataFormatError(f"turns must alternate user/assistant (turn {i})")
    if messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not messages:
        raise DataFormatError("no assistant answer to train on")
    for kind, media in (("image", images), ("video", videos)):
        found = sum(b["type"] == kind for m in messages for b in m["content"])
        if found == 0 and media:
            # no placeholder in the text: put them first in the first user turn (videos before images, SPEC §6.2)
            first = messages[0]["content"]
            insert_at = 1 if kind == "image" and first and first[0]["type"] == "video" else 0
            first[insert_at:insert_at] = [{"type": kind, "text": ""} for _ in media]
        elif found != len(media):
            raise DataFormatError(f"{found} <{kind}> placeholder(s) but {len(media)} {kind}(s) given")
    words = max(_word_count(messages), 1)
    return {
        "id": str(sample_id),
        "source": source,
        "messages": messages,
        "images": images,
        "videos": videos,
        "modality_length": words if (images or videos) else -words,
    }


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _media_paths(folder: str | None, value: Any, key: str, allow_objects: bool = False) -> list:
    """A record's `image`/`video` value (a path or a list of paths) resolved inside `folder`."""
    items = _as_list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            try:
                out.append(resolve_media_path(folder, item))
            except MediaError as err:
                raise DataFormatError(str(err)) from err
        elif allow_objects and item is not None and not isinstance(item, (int, float, bool)):
            out.append(item)  # in-memory PIL images / `datasets.Image` dicts / frame lists from `datasets`
        else:
            raise DataFormatError(f"'{key}' must be a path or a list of paths, got {_kind(item)} {item!r:.40}")
    return out


def llava_record_to_row(record: dict[str, Any], source: DataSource) -> dict[str, Any]:
    """Convert one LLaVA-format record; raises `DataFormatError` saying what is wrong with it."""
    if not isinstance(record, dict):
        raise DataFormatError(f"expected a JSON object, got {_kind(record)}")
    sample_id = str(record.get("id", "?"))
    turns = record.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DataFormatError(f"'conversations' must be a list of {{from, value}} objects, got {_kind(turns)}")
    if turns and ROLES.get(turns[0].get("from")) != "user":
        turns = turns[1:]  # like Video-LLaVA: a leading non-human turn is dropped
    messages = []
    for turn in turns:
        role = ROLES.get(turn.get("from")) if isinstance(turn.get("from"), str) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise DataFormatError(f"bad turn {turn!r:.80}")
        content = _split_placeholders(turn["value"]) if role == "user" else [{"type": "text", "text": turn["value"]}]
        if role == "assistant" and PLACEHOLDER.search(turn["value"]):
            raise DataFormatError("media placeholder in an answer")
        messages.append({"role": role, "content": content})
    images = _media_paths(source.image_folder, record.get("image"), "image")
    videos = _media_paths(source.video_folder, record.get("video"), "video")
    return _finish_row(sample_id, source.path, messages, images, videos)


def messages_record_to_row(record: dict[str, Any], source: DataSource, index: int) -> dict[str, Any]:
    """Convert one `datasets`-style row (`messages` with string or typed content, `images`, `videos`)."""
    if not isinstance(record, dict):
        raise DataFormatError(f"expected a JSON object, got {_kind(record)}")
    sample_id = str(record.get("id", index))
    if not isinstance(record["messages"], list) or not all(isinstance(m, dict) for m in record["messages"]):
        got = _kind(record["messages"])
        raise DataFormatError(f"'messages' must be a list of {{role, content}} objects, got {got}")
    messages = []
    for m in record["messages"]:
        role = ROLES.get(m.get("role")) if isinstance(m.get("role"), str) else None
        if role is None:
            continue  # system prompts come from the chat template
        content = m.get("content")
        if isinstance(content, str):
            blocks = _split_placeholders(content) if role == "user" else [{"type": "text", "text": content}]
        elif isinstance(content, list) and all(isinstance(b, dict) for b in content):
            blocks = [{"type": str(b["type"]), "text": str(b.get("text") or "")} for b in content if b.get("type")]
        else:
            raise DataFormatError(f"message content must be a string or a list of blocks, got {_kind(content)}")
        messages.append({"role": role, "content": blocks})
    images = _media_paths(source.image_folder, record.get("images", record.get("image")), "images", True)
    videos = _media_paths(source.video_folder, record.get("videos", record.get("video")), "videos", True)
    return _finish_row(sample_id, source.path, messages, images, videos)


def _read_json_file(path: str) -> list[tuple[str, Any]]:
    """`(where, record)` pairs of a JSON list (`path[i]`) or JSONL file (`path:line`); a UTF-8 BOM is accepted.

    A JSON file that does not parse raises `DataFormatError` naming the file and position; a bad JSONL line becomes
    a `DataFormatError` in place of its record (skipped and counted like any malformed record).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read: {err.strerror}") from None
    if path.endswith(".jsonl"):
        out: list[tuple[str, Any]] = []
        for n, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{n}", json.loads(line.decode("utf-8"))))
            except UnicodeDecodeError as err:
                out.append((f"{path}:{n}", DataFormatError(f"not UTF-8 text (byte offset {err.start} of the line)")))
            except json.JSONDecodeError as err:
                out.append((f"{path}:{n}", DataFormatError(f"not valid JSON: {err.msg} (column {err.colno})")))
        return out
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text (byte offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of samples, got {_kind(data)}")
    return [(f"{path}[{i}]", record) for i, record in enumerate(data)]


def _read_records(source: DataSource) -> list[tuple[str, Any]]:
    if source.path.endswith((".json", ".jsonl")):
        return _read_json_file(source.path)
    dataset = load_dataset(source.path, split=source.split)
    return [(f"{source.path}[{i}]", record) for i, record in enumerate(dataset)]


def _to_row(record: Any, source: DataSource, index: int) -> dict[str, Any]:
    if isinstance(record, DataFormatError):
        raise record
    if isinstance(record, dict) and "conversations" in record:
        return llava_record_to_row(record, source)
    if isinstance(record, dict) and "messages" in record:
        return messages_record_to_row(record, source, index)
    if isinstance(record, dict):
        raise DataFormatError("no 'conversations'/'messages'")
    raise DataFormatError(f"expected a JSON object, got {_kind(record)}")


def load_source(source: DataSource, strict: bool = False, ledger: SkipLedger | None = None) -> Dataset:
    """Read and normalise one source. Malformed records are skipped, named (file and position) and counted in
    `ledger` (`strict=True`: raise on the first)."""
    records = _read_records(source)
    rows, errors = [], Counter()
    for i, (where, record) in enumerate(records):
        sample_id = str(record.get("id", i)) if isinstance(record, dict) else where
        try:
            try:
                rows.append(_to_row(record, source, i))
            except (TypeError, AttributeError, KeyError, ValueError) as err:
                if isinstance(err, DataFormatError):
                    raise
                raise DataFormatError(f"{type(err).__name__}: {err}") from err
        except DataFormatError as err:
            message = f"{where} (sample {sample_id}): {err}"
            if strict:
                raise DataFormatError(message) from err
            errors[str(err)[:60]] += 1
            if ledger is not None:
                ledger.skip(sample_id, message, kind="record", check=False)
            else:
                logger.warning("%s (skipped)", message)
    if ledger is not None:
        ledger.loaded(len(records))
    if errors:
        logger.warning("%s: skipped %d malformed sample(s): %s", source.path, sum(errors.values()), dict(errors))
    if not rows:
        raise DataFormatError(f"{source.path}: no usable samples ({sum(errors.values())} malformed)")
    logger.info("%s: %d samples", source.path, len(rows))
    if all(isinstance(x, str) for r in rows for x in r["images"] + r["videos"]):
        return Dataset.from_list(rows, features=FEATURES)
    return Dataset.from_list(rows)  # in-memory PIL images / frame arrays: let `datasets` infer


def mix_datasets(datasets: list[Dataset], weights: list[float], seed: int = 0) -> Dataset:
    """Concatenate sources, each resampled to `round(weight * len)` rows (whole copies, then a seeded draw)."""
    if len(datasets) != len(weights):
        raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
    rng = np.random.default_rng(seed)
    parts = []
    for ds, weight in zip(datasets, weights):
        if weight <= 0:
            raise ValueError(f"dataset weights must be positive, got {weight}")
        target = max(1, round(weight * len(ds)))
        whole, rest = divmod(target, len(ds))
        index = list(range(len(ds))) * whole + sorted(rng.choice(len(ds), size=rest, replace=False).tolist())
        parts.append(ds.select(index) if index != list(range(len(ds))) else ds)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def load_training_data(
    sources: list[DataSource], strict: bool = False, seed: int = 0, ledger: SkipLedger | None = None
) -> Dataset:
    """Load, normalise and mix every source into one `Dataset` (see the module docstring for its rows).

    With `ledger`, every dropped record is counted and logged there (`skipped_media.jsonl`), and the load fails
    when more than its `max_skipped_fraction` of all records was dropped.
    """
    if not sources:
        raise ValueError("no training data given: pass --dataset PATH (repeatable)")
    datasets = [load_source(s, strict=strict, ledger=ledger) for s in sources]
    if ledger is not None:
        ledger.check_load()
    mixed = mix_datasets(datasets, [s.weight for s in sources], seed=seed)
    kinds = Counter(
        "image+video" if i and v else "image" if i else "video" if v else "text"
        for i, v in zip(mixed["images"], mixed["videos"])
    )
    logger.info("training data: %d samples %s from %d source(s)", len(mixed), dict(kinds), len(sources))
    return mixed
