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


def test_a_dripping_server_cannot_outlive_the_deadline(tmp_path):
    """Defect 3: one byte a second (status line included) kept `timeout_s=1` waiting for ever (each read is quick)."""
    import time

    records = read_predictions(FIX / "msvd_merge_original.jsonl")[:1]
    with JudgeServer(drip_s=0.5) as server:
        server.script = {"cooking": ["drip", "drip"]}
        start = time.monotonic()
        out = _judge(server, tmp_path, max_retries=1, timeout_s=1.0).judge_many(records, progress=False)
        elapsed = time.monotonic() - start
    assert server.calls["cooking"] == 2 and elapsed < 6, elapsed
    assert out[0]["pred"] is None and out[0]["error"] == "timeout: no complete reply within 1 s"


def test_non_utf8_reply_is_a_bad_reply_not_a_crash(tmp_path):
    """Defect 4: a Latin-1 reply raised UnicodeDecodeError out of the whole evaluation."""
    records = read_predictions(FIX / "msvd_merge_original.jsonl")
    with JudgeServer() as server:
        server.script = {"cooking": ["latin1"], "onion": ["latin1"] * 5}
        out = _judge(server, tmp_path, max_retries=2).judge_many(records, progress=False)
    assert out[0]["pred"] == "yes" and out[0]["attempts"] == 2  # retried, then judged
    assert out[1]["pred"] is None and out[1]["error"].startswith("malformed response: not UTF-8 (byte ")
    assert [o["pred"] for o in out[2:]] == ["yes", "no"]


def test_invalid_settings_are_refused():
    """Defect 12: max_retries=-1 crashed with UnboundLocalError; timeout 0 was accepted."""
    for bad in (dict(max_retries=-1), dict(timeout_s=0), dict(timeout_s=float("nan")), dict(concurrency=0),
                dict(base_url="ftp://x"), dict(min_judged_fraction=1.5)):
        with pytest.raises(ValueError, match="judge"):
            JudgeConfig(**bad)


def test_the_key_goes_only_to_its_endpoint(tmp_path, monkeypatch, caplog):
    """Defect 14: $OPENAI_API_KEY was sent to any --judge-base-url, plain http included."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.delenv("JUDGE_API_KEY", raising=False)
    assert JudgeConfig().api_key_env == "OPENAI_API_KEY"  # api.openai.com
    records = read_predictions(FIX / "msvd_merge_original.jsonl")[:1]
    with JudgeServer() as server:
        judge = _judge(server, tmp_path)
        assert judge.config.api_key_env == "JUDGE_API_KEY"
        score_predictions(TASKS["msvd_qa"], records, judge, tmp_path, progress=False)
        monkeypatch.setenv("JUDGE_API_KEY", "local-secret")
        _judge(server, tmp_path, model="m2").judge_one(records[0])
        _judge(server, tmp_path, model="m3", api_key_env="OPENAI_API_KEY").judge_one(records[0])  # asked for
    assert server.authorization == [None, "Bearer local-secret", "Bearer sk-openai-secret"]
    assert "plain http" not in caplog.text  # loopback
    ChatJudge(JudgeConfig(base_url="http://judge.example.org/v1"))
    assert "JUDGE_API_KEY over plain http to judge.example.org" in caplog.text
    for path in tmp_path.rglob("*"):  # never on disk, never in logs
        assert "secret" not in path.read_text()
    assert "secret" not in caplog.text
