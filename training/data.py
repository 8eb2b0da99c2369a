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

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_dataset

from .media import MediaError, resolve_media_path


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
        raise DataFormatError(f"sample {sample_id} in {source}: conversation must start with a user/human turn")
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise DataFormatError(f"sample {sample_id} in {source}: turns must alternate user/assistant (turn {i})")
    if messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not messages:
        raise DataFormatError(f"sample {sample_id} in {source}: no assistant answer to train on")
    for kind, media in (("image", images), ("video", videos)):
        found = sum(b["type"] == kind for m in messages for b in m["content"])
        if found == 0 and media:
            # no placeholder in the text: put them first in the first user turn (videos before images, SPEC §6.2)
            first = messages[0]["content"]
            insert_at = 1 if kind == "image" and first and first[0]["type"] == "video" else 0
            first[insert_at:insert_at] = [{"type": kind, "text": ""} for _ in media]
        elif found != len(media):
            raise DataFormatError(
                f"sample {sample_id} in {source}: {found} <{kind}> placeholder(s) but {len(media)} {kind}(s) given"
            )
    words = max(_word_count(messages), 1)
    return {
        "id": str(sample_id),
        "source": source,
        "messages": messages,
        "images": images,
        "videos": videos,
        "modality_length": words if (images or videos) else -words,
    }


def llava_record_to_row(record: dict[str, Any], source: DataSource) -> dict[str, Any]:
    """Convert one LLaVA-format record; raises `DataFormatError` naming the sample."""
    sample_id = str(record.get("id", "?"))
    turns = list(record.get("conversations") or [])
    if turns and ROLES.get(turns[0].get("from")) != "user":
        turns = turns[1:]  # like Video-LLaVA: a leading non-human turn is dropped
    messages = []
    for turn in turns:
        role = ROLES.get(turn.get("from"))
        if role is None or not isinstance(turn.get("value"), str):
            raise DataFormatError(f"sample {sample_id} in {source.path}: bad turn {turn!r}")
        content = _split_placeholders(turn["value"]) if role == "user" else [{"type": "text", "text": turn["value"]}]
        if role == "assistant" and PLACEHOLDER.search(turn["value"]):
            raise DataFormatError(f"sample {sample_id} in {source.path}: media placeholder in an answer")
        messages.append({"role": role, "content": content})
    try:
        images = [resolve_media_path(source.image_folder, p) for p in _as_list(record.get("image"))]
        videos = [resolve_media_path(source.video_folder, p) for p in _as_list(record.get("video"))]
    except MediaError as err:
        raise DataFormatError(f"sample {sample_id} in {source.path}: {err}") from err
    return _finish_row(sample_id, source.path, messages, images, videos)


def messages_record_to_row(record: dict[str, Any], source: DataSource, index: int) -> dict[str, Any]:
    """Convert one `datasets`-style row (`messages` with string or typed content, `images`, `videos`)."""
    sample_id = str(record.get("id", index))
    messages = []
    for m in record["messages"]:
        role = ROLES.get(m["role"])
        if role is None:
            continue  # system prompts come from the chat template
        content = m["content"]
        if isinstance(content, str):
            blocks = _split_placeholders(content) if role == "user" else [{"type": "text", "text": content}]
        else:
            blocks = [{"type": b["type"], "text": b.get("text") or ""} for b in content if b.get("type")]
        messages.append({"role": role, "content": blocks})

    def resolve(folder: str | None, item: Any) -> Any:
        if isinstance(item, str):
            try:
                return resolve_media_path(folder, item)
            except MediaError as err:
                raise DataFormatError(f"sample {sample_id} in {source.path}: {err}") from err
        return item

    images = [resolve(source.image_folder, x) for x in _as_list(record.get("images", record.get("image")))]
    videos = [resolve(source.video_folder, x) for x in _as_list(record.get("videos", record.get("video")))]
    return _finish_row(sample_id, source.path, messages, images, videos)


def _read_records(source: DataSource) -> list[dict[str, Any]] | Dataset:
    path = source.path
    if path.endswith(".jsonl"):
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON list of samples, got {type(data).__name__}")
        return data
    return load_dataset(path, split=source.split)


def load_source(source: DataSource, strict: bool = False) -> Dataset:
    """Read and normalise one source. Malformed records are skipped and counted (`strict=True`: raise)."""
    records = _read_records(source)
    rows, errors = [], Counter()
    for i, record in enumerate(records):
        try:
            if "conversations" in record:
                rows.append(llava_record_to_row(record, source))
            elif "messages" in record:
                rows.append(messages_record_to_row(record, source, i))
            else:
                raise DataFormatError(f"sample {record.get('id', i)} in {source.path}: no 'conversations'/'messages'")
        except DataFormatError as err:
            if strict:
                raise
            errors[str(err).split(": ", 1)[-1][:60]] += 1
            logger.warning("%s (skipped)", err)
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


def load_training_data(sources: list[DataSource], strict: bool = False, seed: int = 0) -> Dataset:
    """Load, normalise and mix every source into one `Dataset` (see the module docstring for its rows)."""
    if not sources:
        raise ValueError("no training data given: pass --dataset PATH (repeatable)")
    datasets = [load_source(s, strict=strict) for s in sources]
    mixed = mix_datasets(datasets, [s.weight for s in sources], seed=seed)
    kinds = Counter(
        "image+video" if i and v else "image" if i else "video" if v else "text"
        for i, v in zip(mixed["images"], mixed["videos"])
    )
    logger.info("training data: %d samples %s from %d source(s)", len(mixed), dict(kinds), len(sources))
    return mixed
