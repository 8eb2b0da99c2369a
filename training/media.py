"""Media for training: safe path resolution, lazy image/video decoding and the skipped-media ledger.

Paths in the data files are relative to a media folder given on the command line; a path that resolves outside
its folder (`../x.jpg`, an absolute path elsewhere, a symlink out) is rejected. Decoding happens in the collator,
so DataLoader workers decode in parallel. A sample whose media cannot be read is skipped, counted and written to
`<output_dir>/skipped_media.jsonl` (one JSON line per skip, safe across workers and ranks); `SkippedMediaSummary`
logs the totals at the end of training.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import TrainerCallback


logger = logging.getLogger(__name__)

SKIP_LOG_NAME = "skipped_media.jsonl"


class MediaError(ValueError):
    """A sample's image or video is missing, unreadable or outside its media folder."""


def resolve_media_path(folder: str | os.PathLike | None, relative: str) -> str:
    """Join `relative` onto `folder` and refuse anything that escapes it.

    Args:
        folder: the media root; `None` means `relative` must be usable as is (absolute or relative to the cwd).
        relative: the path stored in the data file.

    Raises:
        MediaError: when the resolved path is not inside `folder`.
    """
    if not isinstance(relative, str):
        raise MediaError(f"media path must be a string, got {type(relative).__name__} {relative!r:.40}")
    if "\x00" in relative:
        raise MediaError(f"media path {relative!r} contains a NUL byte")
    if folder is None:
        return str(Path(relative))
    root = Path(folder).resolve()
    candidate = (root / relative).resolve()  # resolves `..` and symlinks
    if candidate != root and root not in candidate.parents:
        raise MediaError(f"media path {relative!r} escapes its folder {str(root)!r}")
    return str(candidate)


def load_image(source: Any) -> Image.Image:
    """Open an image path (or pass a PIL image through) as RGB; raises `MediaError` when unreadable."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, dict) and source.get("bytes") is not None:  # `datasets.Image` storage
        import io

        source = io.BytesIO(source["bytes"])
    elif isinstance(source, dict) and source.get("path"):
        source = source["path"]
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise MediaError(f"cannot read image {source!r}: {err}") from err


def load_video(source: Any, num_frames: int) -> np.ndarray:
    """Decode `num_frames` uniformly sampled frames as a `(T, H, W, 3)` uint8 array; raises `MediaError`.

    Uses `processing.load_video` (the processor's own sampler, so training and inference see the same frames) and
    falls back to a plain PyAV decode when the processing package does not provide it.
    """
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, (list, tuple)):  # a list of frames
        return np.stack([np.asarray(load_image(frame)) for frame in source])
    if not os.path.exists(str(source)):
        raise MediaError(f"video file not found: {source!r}")
    try:
        from processing import load_video as processor_load_video
    except ImportError:
        processor_load_video = _pyav_load_video
    try:
        frames = processor_load_video(source, num_frames)
        frames = getattr(frames, "frames", frames)  # processing.VideoClip -> (T, H, W, 3)
    except MediaError:
        raise
    except Exception as err:  # noqa: BLE001 -- decoders raise anything from OSError to av.error.*
        raise MediaError(f"cannot decode video {source!r}: {type(err).__name__}: {err}") from err
    return np.asarray(frames)


def _pyav_load_video(path: str, num_frames: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise MediaError(f"video {path!r} has no frames")
    index = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return np.stack([frames[i] for i in index])


class SkipLedger:
    """Counts records loaded, samples drawn and skips in one process, and appends each skip to a shared JSONL file.

    Records dropped while loading the data (`kind="record"`) and samples skipped in the collator (`"media"`,
    `"length"`) go to the same ledger and log. `max_skipped_fraction` is enforced on the records dropped when the
    load ends (`check_load`), on the samples skipped during training once `min_seen` were drawn (`check`), and over
    every sample drawn in the run when training ends (`check_run`), so small runs are held to it too.

    Args:
        log_dir: folder for `skipped_media.jsonl` (usually `output_dir`); `None` keeps the log in memory only.
        max_skipped_fraction: fail the run once more than this fraction was skipped. `1.0` never fails.
        min_seen: samples to draw before the fraction is enforced *during* training, so one early bad file does not
            end a long run (the end of the load and of training always check).
    """

    def __init__(self, log_dir: str | None = None, max_skipped_fraction: float = 0.05, min_seen: int = 50) -> None:
        if not 0.0 <= max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must be within [0, 1], got {max_skipped_fraction}")
        if min_seen < 0:
            raise ValueError(f"min_seen must be >= 0, got {min_seen}")
        self.log_path = os.path.join(log_dir, SKIP_LOG_NAME) if log_dir else None
        self.max_skipped_fraction = max_skipped_fraction
        self.min_seen = min_seen
        self.run_id = uuid.uuid4().hex[:12]
        self.records = 0
        self.seen = 0
        self.skipped: Counter[str] = Counter()

    def loaded(self, n: int) -> None:
        """Count `n` records read from a data file (dropped ones included)."""
        self.records += n

    def see(self, n: int = 1) -> None:
        """Count `n` samples drawn by the collator."""
        self.seen += n

    def skip(self, sample_id: str, reason: str, kind: str = "media", check: bool = True) -> None:
        """Record one skipped sample, log it, and (with `check`) raise `MediaError` once the threshold is passed."""
        self.skipped[kind] += 1
        logger.warning("skipping sample %s (%s): %s", sample_id, kind, reason)
        if self.log_path:
            os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
            row = {"id": str(sample_id), "kind": kind, "reason": reason, "pid": os.getpid(), "run": self.run_id}
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if check:
            self.check()

    def _drawn_skips(self) -> Counter[str]:
        return Counter({k: v for k, v in self.skipped.items() if k != "record"})

    def check_load(self) -> None:
        """Raise `MediaError` when more than the fraction of the records read was dropped as malformed."""
        self._enforce(Counter(record=self.skipped["record"]), self.records, "records dropped while loading")

    def check(self) -> None:
        """Mid-training check over the samples drawn in this process, once `min_seen` were drawn."""
        if self.seen >= self.min_seen:
            self._enforce(self._drawn_skips(), self.seen, "samples skipped")

    def check_run(self, drawn: int) -> None:
        """End-of-training check over the samples `drawn` by this process in this run, its DataLoader workers
        included (their skips are read back from the shared log by this ledger's run id)."""
        if self.log_path is None:
            skipped = self._drawn_skips()
        else:
            rows = read_skip_log(os.path.dirname(self.log_path))
            skipped = Counter(r.get("kind") for r in rows if r.get("run") == self.run_id and r.get("kind") != "record")
        self._enforce(skipped, drawn, "samples drawn during training were skipped")

    def _enforce(self, skipped: Counter[str], total: int, what: str) -> None:
        count = sum(skipped.values())
        if total and count > self.max_skipped_fraction * total:
            raise MediaError(
                f"{count} of {total} {what} ({dict(skipped)}), more than max_skipped_fraction="
                f"{self.max_skipped_fraction}; see {self.log_path or 'the log above'} and fix the data or raise "
                "--max_skipped_fraction"
            )


def read_skip_log(log_dir: str) -> list[dict[str, Any]]:
    """All skip records written under `log_dir` (empty when nothing was skipped)."""
    path = os.path.join(log_dir, SKIP_LOG_NAME)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class SkippedMediaSummary(TrainerCallback):
    """Logs how many samples were skipped, by kind, when training ends (main process only)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
        if not state.is_world_process_zero:
            return
        records = read_skip_log(self.log_dir)
        if not records:
            logger.info("skipped samples: none")
            return
        kinds = Counter(r["kind"] for r in records)
        unique = len({r["id"] for r in records})
        logger.warning(
            "skipped %d sample draws (%d distinct samples) during training: %s; details in %s",
            len(records), unique, dict(kinds), os.path.join(self.log_dir, SKIP_LOG_NAME),
        )
