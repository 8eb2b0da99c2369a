"""Which checkpoint a rerun resumes from: real files written by safetensors / torch.save, then cut or damaged."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from training.checkpoints import checkpoint_problem, newest_complete_checkpoint


def _checkpoint(folder, step: int):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({"w": torch.randn(64, 64)}, folder / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}, "param_groups": []}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def _cut(path, keep: float = 0.7):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_each_kind_of_incomplete_checkpoint_is_named(tmp_path):
    good = _checkpoint(tmp_path / "checkpoint-2", 2)
    assert checkpoint_problem(str(good)) is None
    cases = {
        "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
        "trainer_state.json is damaged": lambda c: (c / "trainer_state.json").write_text('{"global_st'),
        "no model weights": lambda c: (c / "model.safetensors").unlink(),
        "model.safetensors: truncated safetensors file": lambda c: _cut(c / "model.safetensors"),
        "optimizer.pt: truncated or damaged": lambda c: _cut(c / "optimizer.pt"),
        "no optimizer.pt": lambda c: (c / "optimizer.pt").unlink(),
    }
    for i, (reason, damage) in enumerate(cases.items()):
        folder = _checkpoint(tmp_path / f"case{i}" / "checkpoint-4", 4)
        damage(folder)
        assert reason in (checkpoint_problem(str(folder)) or ""), reason
    no_optimizer = _checkpoint(tmp_path / "only-model" / "checkpoint-4", 4)
    (no_optimizer / "optimizer.pt").unlink()
    assert checkpoint_problem(str(no_optimizer), require_optimizer=False) is None  # --save_only_model


def test_sharded_weights_with_a_missing_shard(tmp_path):
    folder = _checkpoint(tmp_path / "checkpoint-3", 3)
    os.rename(folder / "model.safetensors", folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "model-00002-of-00002.safetensors (listed in model.safetensors.index.json) is missing" in \
        checkpoint_problem(str(folder))


def test_newest_complete_checkpoint_skips_newer_broken_ones(tmp_path):
    _checkpoint(tmp_path / "checkpoint-2", 2)
    _checkpoint(tmp_path / "checkpoint-10", 10)
    broken = _checkpoint(tmp_path / "checkpoint-12", 12)
    (broken / "trainer_state.json").unlink()
    _cut(_checkpoint(tmp_path / "checkpoint-14", 14) / "model.safetensors", 0.3)
    path, skipped = newest_complete_checkpoint(str(tmp_path))
    assert path == str(tmp_path / "checkpoint-10")  # numeric order, not "checkpoint-2" > "checkpoint-10"
    assert [s.split(":")[0] for s in skipped] == [str(tmp_path / "checkpoint-14"), str(tmp_path / "checkpoint-12")]
    assert newest_complete_checkpoint(str(tmp_path / "nowhere")) == (None, [])


def test_explicit_incomplete_checkpoint_is_refused(tmp_path):
    from types import SimpleNamespace

    from training.cli import resume_checkpoint

    broken = _checkpoint(tmp_path / "checkpoint-4", 4)
    (broken / "optimizer.pt").unlink()
    args = SimpleNamespace(resume_from_checkpoint=str(broken), save_only_model=False, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot resume from it: no optimizer.pt"):
        resume_checkpoint(args)
    args.resume_from_checkpoint = None
    assert resume_checkpoint(args) is None
