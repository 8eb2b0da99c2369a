"""`videollava eval` end to end on the plumbing: re-scoring files, generate-and-score with a stub, the report."""

import json
from pathlib import Path

import pytest

from evaluation import runner
from tests.evaluation.judge_server import JudgeServer
from tests.evaluation.stubs import StubModel, StubProcessor, stub_generate, write_shapes
from videollava.cli import main


FIX = Path(__file__).parent / "fixtures"


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_rescore_pope_file(capsys):
    assert main(["eval", "--task", "pope", "--predictions", str(FIX / "pope_predictions.jsonl")]) == 0
    result = _json_out(capsys)
    assert result["metrics"]["categories"]["random"]["accuracy"] == pytest.approx(0.6)


def test_rescore_original_video_qa_output_with_judge(tmp_path, capsys):
    with JudgeServer() as server:
        argv = ["eval", "--task", "msvd_qa", "--predictions", str(FIX / "msvd_merge_original.jsonl"),
                "--output", str(tmp_path), "--judge-base-url", server.url, "--judge-model", "j", "--no-progress"]
        assert main(argv) == 0
        first = _json_out(capsys)
        assert main(argv) == 0  # cached: no new requests
        assert sum(server.calls.values()) == 4
    assert first["metrics"]["accuracy"] == 0.5 and first["metrics"]["average_score"] == 2.5
    assert first["judge"]["model"] == "j" and (tmp_path / "judge_cache.jsonl").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["headline"] == {"accuracy": 50.0, "score": 2.5}


def test_generate_score_and_report_with_stub_model(tmp_path, capsys, monkeypatch):
    """Plumbing only: the model is a stub here (the real tiny model runs in test_end_to_end)."""
    data = write_shapes(tmp_path / "data", n=6).parent
    monkeypatch.setattr(runner, "load_model_and_processor", lambda *a, **k: (StubModel(), StubProcessor()))
    monkeypatch.setattr(runner, "generate_answers", stub_generate)
    out = tmp_path / "out"
    argv = ["eval", "--task", "shapes", "--model", "stub", "--data", str(data), "--output", str(out),
            "--batch-size", "4", "--limit", "5", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = _json_out(capsys)
    assert result["metrics"]["accuracy"] == 1.0 and result["metrics"]["count"] == 5
    config = json.loads((out / "run_config.json").read_text())
    assert config["generation"]["max_new_tokens"] == 32 and config["limit"] == 5 and config["batch_size"] == 4
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 5
    assert "Other tasks" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="different"):
        main(argv[:-1] + ["--max-new-tokens", "7", "--no-progress"])

    (tmp_path / "msvd").mkdir()
    (tmp_path / "msvd" / "metrics.json").write_text(json.dumps(
        {"task": "msvd_qa", "metrics": {}, "headline": {"accuracy": 66.25, "score": 3.71},
         "judge": {"model": "gpt-3.5-turbo", "base_url": "https://api.openai.com/v1", "served_models": ["gpt-3.5-turbo-0125"]}}
    ))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="fixtures/metrics.json"):
        main(["eval", "--report", str(out), str(FIX)])
    assert main(["eval", "--report", str(out), str(tmp_path / "msvd"), "--output", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "report.md").read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| ours (Acc / Score) | 66.2 / 3.71 | – | – | – |" in table
    assert "| Video-LLaVA, as reported in the paper (Acc / Score) | 70.7 / 3.9 | 59.2 / 3.5 |" in table
    assert "gpt-3.5-turbo-0125" in table and "| shapes | accuracy_static | 100.0 |" in table
