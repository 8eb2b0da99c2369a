"""Runner plumbing with a stub model: resume after a kill, sharding, the run record, refusing mixed settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import runner
from evaluation.predictions import append_records, read_predictions
from evaluation.tasks import load_shapes
from tests.evaluation.stubs import StubModel, StubProcessor, stub_generate, write_shapes


ROOT = Path(__file__).resolve().parents[2]
SETTINGS = runner.GenerationSettings(max_new_tokens=8)


def test_greedy_defaults_override_checkpoint_sampling():
    kwargs = runner.GenerationSettings().generate_kwargs()
    assert kwargs["do_sample"] is False and kwargs["temperature"] is None and kwargs["num_beams"] == 1
    assert runner.GenerationSettings(do_sample=True, temperature=0.7).generate_kwargs()["temperature"] == 0.7


def test_resume_after_kill(tmp_path):
    data = write_shapes(tmp_path / "data", n=6)
    out = tmp_path / "out"
    script = (
        "import sys; from evaluation import runner; from evaluation.tasks import load_shapes\n"
        "from tests.evaluation.stubs import StubModel, StubProcessor, stub_generate\n"
        f"runner.run_generation(load_shapes(__import__('pathlib').Path({str(data)!r})), {str(out)!r}, StubModel(), "
        "StubProcessor(), runner.GenerationSettings(), batch_size=2, generate_fn=stub_generate, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={"STUB_KILL_AFTER": "3", "PATH": ""},
                          capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == -9, proc.stderr.decode()
    shard = out / "shards" / "predictions.rank0.jsonl"
    assert [r["id"] for r in read_predictions(shard)] == ["q0", "q1"]  # the batch in flight is lost, not torn
    with shard.open("a") as f:
        f.write('{"id": "q2", "pr')  # a torn write from a harder crash is tolerated too

    samples = load_shapes(data)
    model = StubModel()
    n = runner.run_generation(samples, out, model, StubProcessor(), SETTINGS, 2, stub_generate, progress=False)
    assert n == 4 and model.seen == ["q2", "q3", "q4", "q5"]
    merged = runner.merge_predictions(samples, out)
    assert [r["id"] for r in merged] == [f"q{i}" for i in range(6)]
    assert merged[0] == {"id": "q0", "question": "What moves? say w0", "answer": "w0", "pred": "w0",
                         "question_type": "temporal"}  # fmt: skip
    # Nothing left: a third run generates nothing.
    assert runner.run_generation(samples, out, StubModel(), None, SETTINGS, 2, stub_generate, progress=False) == 0


def test_sharded_ranks_cover_all_samples_once(tmp_path):
    samples = load_shapes(write_shapes(tmp_path / "data", n=7))
    models = [StubModel() for _ in range(3)]
    for rank, model in enumerate(models):
        runner.run_generation(samples, tmp_path, model, None, SETTINGS, 2, stub_generate, rank, 3, progress=False)
    assert sorted(sum((m.seen for m in models), [])) == sorted(s.id for s in samples)
    assert models[1].seen == ["q1", "q4"]
    assert [r["id"] for r in runner.merge_predictions(samples, tmp_path)] == [s.id for s in samples]


def test_run_record_and_mixed_settings_refused(tmp_path):
    samples = load_shapes(write_shapes(tmp_path / "data", n=2))
    config = runner.describe_run(StubModel(), StubProcessor(), "shapes", "tiny", str(tmp_path), SETTINGS,
                                 dtype="float32", revision="abc123")  # fmt: skip
    assert config["generation"]["do_sample"] is False and config["revision"] == "abc123"
    assert config["dtype"] == "float32" and config["prompt"]["chat_template_sha256"]
    (tmp_path / "run_config.json").write_text(json.dumps(config))
    runner.check_resume_compatible(tmp_path, config)
    other = dict(config, generation={**config["generation"], "max_new_tokens": 99})
    with pytest.raises(ValueError, match="generation"):
        runner.check_resume_compatible(tmp_path, other)
    assert samples[0].media == [("video", str(tmp_path / "data" / "clip0.mp4"))]


def test_append_repairs_torn_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "pred": "x"}\n{"id": "b", "pr')
    append_records(path, [{"id": "c", "pred": "z"}])
    assert [r["id"] for r in read_predictions(path)] == ["a", "c"]
    with pytest.raises(ValueError, match="p.jsonl:2"):
        read_predictions(path, strict=True)


def test_our_model_type_loads_with_installed_code_even_without_code_files(tmp_path):
    from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
    from processing import LanguageBindVideoLlavaProcessor, build_processor
    from tests.tiny import tiny_config, tiny_tokenizer

    config = tiny_config()
    LanguageBindVideoLlavaForConditionalGeneration(config).save_pretrained(tmp_path)
    build_processor(config, tiny_tokenizer()).save_pretrained(tmp_path)
    for code in tmp_path.glob("*.py"):  # like the embedded default model, which ships no code
        code.unlink()
    model, processor = runner.load_model_and_processor(str(tmp_path), dtype="float32", device="cpu")
    assert type(model).__module__ == "modeling_videollava.modeling_videollava"
    assert isinstance(processor, LanguageBindVideoLlavaProcessor) and processor.tokenizer.padding_side == "left"
