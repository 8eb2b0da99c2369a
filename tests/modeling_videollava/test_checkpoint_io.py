"""`videollava convert` on damaged inputs: one line naming the file, and never a partial output folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.modeling_videollava.helpers import tiny_hf_model
from tests.tiny import tiny_tokenizer
from videollava.cli import main


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    tiny_hf_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _convert(src, out, caplog) -> tuple[int, list[str]]:
    caplog.clear()
    code = main(["convert", "--from", "hf", "--input", str(src), "--output", str(out), "--num-frames", "2"])
    return code, [f"ERROR {r.getMessage()}" for r in caplog.records if r.levelname == "ERROR"]


def test_damaged_inputs_give_one_line_naming_the_file(hf_folder, tmp_path, caplog):
    bad_json = _copy(hf_folder, tmp_path / "bad_json")
    (bad_json / "config.json").write_text('{"vision_config": {"hidden_size": 32,}')
    code, errors = _convert(bad_json, tmp_path / "out1", caplog)
    assert code == 1 and errors == [f"ERROR {bad_json}/config.json: not valid JSON: Expecting property name enclosed "
                                    "in double quotes (line 1, column 38)"]

    cut = _copy(hf_folder, tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: int(0.7 * len(data))])
    code, errors = _convert(cut, tmp_path / "out2", caplog)
    assert code == 1 and len(errors) == 1
    assert errors[0] == (f"ERROR {cut}/model.safetensors: truncated safetensors file: {int(0.7 * len(data))} of "
                         f"{len(data)} bytes (cut at byte {int(0.7 * len(data))})")

    legacy = _copy(hf_folder, tmp_path / "bin")
    torch.save(load_file(legacy / "model.safetensors"), legacy / "pytorch_model.bin")
    (legacy / "model.safetensors").unlink()
    data = (legacy / "pytorch_model.bin").read_bytes()
    (legacy / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    code, errors = _convert(legacy, tmp_path / "out3", caplog)
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"ERROR {legacy}/pytorch_model.bin: cannot read")
    assert "truncated or damaged PyTorch file" in errors[0]
    assert not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())


def test_failed_conversion_leaves_no_partial_output(hf_folder, tmp_path, caplog):
    """The tokenizer check fails after the weights were written: nothing may appear at --output."""
    from transformers import PreTrainedTokenizerFast

    src = _copy(hf_folder, tmp_path / "src")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / name).unlink(missing_ok=True)
    plain = tiny_tokenizer()
    PreTrainedTokenizerFast(tokenizer_object=plain.backend_tokenizer, unk_token="<unk>").save_pretrained(src)
    vocab = json.loads((src / "tokenizer.json").read_text())
    vocab["added_tokens"] = []  # no <image> / <video>: ids disagree with the config
    (src / "tokenizer.json").write_text(json.dumps(vocab))
    code, errors = _convert(src, tmp_path / "out", caplog)
    assert code == 1 and len(errors) == 1 and "disagree with the config" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # an existing model folder is replaced only once the new one is complete; a folder of other files is refused
    assert _convert(hf_folder, tmp_path / "out", caplog)[0] == 0
    first = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert _convert(src, tmp_path / "out", caplog)[0] == 1
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == first
    assert (tmp_path / "out" / "tokenizer.json").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    code, errors = _convert(hf_folder, tmp_path / "notes", caplog)
    assert code == 1 and "exists and is not a model folder" in errors[0]
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "out", "src"]
