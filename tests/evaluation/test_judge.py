"""The judge client against a local chat-completions server: retries, bad replies, timeouts, cache, identity."""

import json
from pathlib import Path

import pytest

from evaluation.judge import ChatJudge, JudgeConfig, JudgeError
from evaluation.predictions import read_predictions
from evaluation.scoring import score_predictions
from evaluation.tasks import TASKS
from tests.evaluation.judge_server import JudgeServer


FIX = Path(__file__).parent / "fixtures"


def _judge(server: JudgeServer, tmp_path: Path, **kw) -> ChatJudge:
    cfg = dict(base_url=server.url, model="local-judge", concurrency=4, max_retries=3, timeout_s=0.5, backoff_s=0.01,
               cache_path=str(tmp_path / "cache.jsonl"))  # fmt: skip
    cfg.update(kw)
    return ChatJudge(JudgeConfig(**cfg))


def test_retries_bad_replies_and_timeouts_then_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    records = read_predictions(FIX / "msvd_merge_original.jsonl")
    with JudgeServer(sleep_s=1.0) as server:
        server.script = {"cooking": ["prose", "badjson"], "onion": ["500"], "boy": ["sleep"]}
        judge = _judge(server, tmp_path)
        result = score_predictions(TASKS["msvd_qa"], records, judge, tmp_path, progress=False)
        assert dict(server.calls) == {"cooking": 3, "onion": 2, "boy": 2, "ball": 1}
        m = result["metrics"]
        assert (m["accuracy"], m["average_score"], m["judge_failures"]) == (0.5, 2.5, 0)
        assert result["judge"]["model"] == "local-judge"
        assert result["judge"]["served_models"] == ["local-judge-served"]
        verdicts = [json.loads(line) for line in (tmp_path / "judgements.jsonl").read_text().splitlines()]
        assert [v["attempts"] for v in verdicts] == [3, 2, 2, 1]

        # A re-run with a fresh client reads the cache: no request at all.
        server.calls.clear()
        again = score_predictions(TASKS["msvd_qa"], records, _judge(server, tmp_path), None, progress=False)
        assert sum(server.calls.values()) == 0 and again["metrics"] == m
        # Another judge model does not share cached verdicts.
        _judge(server, tmp_path, model="other-judge").judge_one(records[0])
        assert server.calls["cooking"] == 1


def test_gives_up_after_bounded_retries(tmp_path):
    records = read_predictions(FIX / "msvd_merge_original.jsonl")[:1]
    with JudgeServer() as server:
        server.script = {"cooking": ["prose"] * 10}
        out = _judge(server, tmp_path, max_retries=2).judge_many(records, progress=False)
        assert server.calls["cooking"] == 3
        assert out[0]["pred"] is None and "cannot parse" in out[0]["error"]


def test_fatal_http_error_is_raised(tmp_path):
    records = read_predictions(FIX / "msvd_merge_original.jsonl")[:1]
    with JudgeServer() as server:
        server.script = {"cooking": ["401"]}
        with pytest.raises(JudgeError, match="HTTP 401"):
            _judge(server, tmp_path).judge_many(records, progress=False)
        assert server.calls["cooking"] == 1


def test_unreachable_endpoint_fails_softly(tmp_path):
    records = read_predictions(FIX / "msvd_merge_original.jsonl")[:1]
    judge = ChatJudge(JudgeConfig(base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout_s=0.5))
    out = judge.judge_many(records, progress=False)
    assert out[0]["pred"] is None and out[0]["error"].startswith("transport")
