"""Which checkpoint a rerun resumes from: the newest *complete* `checkpoint-N` in the output folder.

A run killed while saving leaves `checkpoint-N` half-written (config and code, no weights or no trainer state).
`Trainer` writes `trainer_state.json` last, so a checkpoint is complete when that file, the weights and the optimizer
state are all there and readable (checked from headers and zip directories only: no tensor is loaded).

Example:
    >>> path, skipped = newest_complete_checkpoint("out/stage1")
"""

from __future__ import annotations

import json
import os
import re

from modeling_videollava.checkpoint_io import safetensors_problem, torch_zip_problem


CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SAFETENSORS = ("model.safetensors", "adapter_model.safetensors")
PICKLES = ("pytorch_model.bin", "adapter_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _sharded_problem(folder: str, index: str) -> str | None:
    try:
        with open(os.path.join(folder, index), encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{index} is unreadable ({type(err).__name__}: {err})"
    for shard in shards:
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            return f"{shard} (listed in {index}) is missing"
        problem = safetensors_problem(path) if shard.endswith(".safetensors") else torch_zip_problem(path)
        if problem:
            return f"{shard}: {problem}"
    return None


def _weights_problem(folder: str, names: set[str]) -> str | None:
    if any(n.startswith("global_step") or n.startswith("pytorch_model_fsdp") for n in names):
        return None  # DeepSpeed / FSDP states: their engines validate them
    for index in INDEXES:
        if index in names:
            return _sharded_problem(folder, index)
    for name in SAFETENSORS + PICKLES:
        if name in names:
            path = os.path.join(folder, name)
            problem = safetensors_problem(path) if name.endswith(".safetensors") else torch_zip_problem(path)
            return f"{name}: {problem}" if problem else None
    return "no model weights (the save was cut short)"


def checkpoint_problem(folder: str, require_optimizer: bool = True) -> str | None:
    """Why `folder` cannot be resumed from, in a few words, or None when it is complete.

    Args:
        folder: a `checkpoint-N` folder written by `Trainer`.
        require_optimizer: also require `optimizer.pt` (False for `--save_only_model` runs).
    """
    try:
        names = set(os.listdir(folder))
    except OSError as err:
        return f"unreadable folder ({err})"
    if "trainer_state.json" not in names:
        return "no trainer_state.json (the save was cut short)"
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"trainer_state.json is damaged ({type(err).__name__}: {err})"
    problem = _weights_problem(folder, names)
    if problem or not require_optimizer:
        return problem
    if "optimizer.pt" in names:
        problem = torch_zip_problem(os.path.join(folder, "optimizer.pt"))
        return f"optimizer.pt: {problem}" if problem else None
    if any(n.startswith(("global_step", "optimizer_")) for n in names):
        return None  # DeepSpeed / FSDP optimizer states
    return "no optimizer.pt (the save was cut short)"


def newest_complete_checkpoint(output_dir: str, require_optimizer: bool = True) -> tuple[str | None, list[str]]:
    """The newest complete `checkpoint-N` under `output_dir` (or None), and one line per newer one skipped and why."""
    if not os.path.isdir(output_dir):
        return None, []
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT.match(name))
         and os.path.isdir(os.path.join(output_dir, name))),
        reverse=True,
    )
    skipped = []
    for _, name in steps:
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path, require_optimizer)
        if problem is None:
            return path, skipped
        skipped.append(f"{path}: {problem}")
    return None, skipped


def checkpoint_step(folder: str) -> int:
    """`global_step` recorded in a (complete) checkpoint's `trainer_state.json`."""
    with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
        return int(json.load(f)["global_step"])
