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
        {"task": "msvd_qa", "metrics": {"count": 118, "judge_failures": 2},
         "headline": {"accuracy": 66.25, "score": 3.71},
         "judge": {"model": "gpt-3.5-turbo", "base_url": "https://api.openai.com/v1", "served_models": ["gpt-3.5-turbo-0125"]}}
    ))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="fixtures/metrics.json"):
        main(["eval", "--report", str(out), str(FIX)])
    assert main(["eval", "--report", str(out), str(tmp_path / "msvd"), "--output", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "report.md").read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| ours (Acc / Score) | 66.2 / 3.71 (judged 118/120) | – | – | – |" in table
    assert "| Video-LLaVA, as reported in the paper (Acc / Score) | 70.7 / 3.9 | 59.2 / 3.5 |" in table
    assert "gpt-3.5-turbo-0125" in table and "| shapes | accuracy_static | 100.0 |" in table
    assert "| shapes | count | 5 |" in table


def test_judge_outage_fails_the_run_and_the_report_counts_verdicts(tmp_path, capsys, caplog):
    """Defect 5: every judge call failing read as a real 0 % score with exit 0."""
    predictions = str(FIX / "msvd_merge_original.jsonl")
    with JudgeServer() as server:
        argv = ["eval", "--task", "msvd_qa", "--predictions", predictions, "--output", str(tmp_path / "down"),
                "--judge-base-url", server.url, "--judge-model", "j", "--no-progress", "--judge-max-retries", "1"]
        server.always = "500"
        assert main(argv) == 1
        assert not (tmp_path / "down" / "metrics.json").exists() and (tmp_path / "down" / "judgements.jsonl").exists()
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "gave a verdict for only 0 of 4 predictions" in errors[0]
        assert "HTTP 500" in errors[0]

        server.always = None
        server.script = {"onion": ["500"] * 4}  # one sample fails in both runs: 3 of 4 judged
        argv[argv.index("--output") + 1] = str(tmp_path / "partial")
        assert main(argv) == 1 and "only 3 of 4" in caplog.text
        assert main(argv + ["--judge-min-judged", "0.7"]) == 0  # asked for: scored on the 3, and says so
        assert _json_out(capsys)["metrics"]["judge_failures"] == 1
    assert main(["eval", "--report", str(tmp_path / "partial")]) == 0
    assert "| ours (Acc / Score) | 66.7 / 3.00 (judged 3/4) | – | – | – |" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value", [("--judge-max-retries", "-1"), ("--judge-timeout", "0"),
                                        ("--judge-timeout", "nan"), ("--judge-concurrency", "0"),
                                        ("--judge-min-judged", "2")])
def test_judge_options_are_validated(flag, value, capsys):
    """Defect 12: `--judge-max-retries -1` crashed with UnboundLocalError, `--judge-timeout 0` was accepted."""
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--task", "msvd_qa", "--predictions", str(FIX / "msvd_merge_original.jsonl"), flag, value])
    assert exit_.value.code == 2 and f"argument {flag}: " in capsys.readouterr().err
