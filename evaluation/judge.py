"""LLM judge for video QA over any OpenAI-compatible chat-completions endpoint (standard library only).

The prompts are the original Video-LLaVA / Video-ChatGPT ones (`videollava/eval/video/eval_video_qa.py`, SPEC §9.1).
Judgements are cached in a jsonl file keyed by (judge model, system prompt, user prompt), so a re-run costs nothing.
Requests run in a thread pool (`concurrency`), with retries and exponential back-off on transport errors,
HTTP 429/5xx, replies that are late (`timeout_s` bounds the whole request, not each read), not UTF-8 or
unparseable; other HTTP 4xx errors (bad key, unknown model) fail at once.

The API key is sent only to the endpoint it is meant for: `$OPENAI_API_KEY` to `api.openai.com`, `$JUDGE_API_KEY`
to any other `base_url` (or the variable named by `api_key_env`); a key sent over plain http to a host other than
this machine is warned about first. The key is never written to disk or logs.

Example:
    judge = ChatJudge(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct"))
    verdicts = judge.judge_many([{"id": "1", "question": "...", "answer": "...", "pred": "..."}])
"""

import hashlib
import http.client
import ipaddress
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .metrics.video_qa import JudgementParseError, parse_judgement


logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer "
    "pairs. Your task is to compare the predicted answer with the correct answer and determine if they match "
    "meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the meaningful match "
    "between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
USER_TEMPLATE = (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
    "{answer}\nPredicted Answer: {pred}\n\nProvide your evaluation only as a yes/no and score where the score is an "
    "integer value between 0 and 5, with 5 indicating the highest meaningful match. Please generate the response in "
    "the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' "
    "or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
    "provide the Python dictionary string. For example, your response should look like this: "
    "{{'pred': 'yes', 'score': 4.8}}."
)
PROMPT_VERSION = hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:12]
_FATAL_HTTP = {400, 401, 403, 404, 422}
OPENAI_HOST = "api.openai.com"


class JudgeError(RuntimeError):
    """The judge endpoint rejected the request in a way retrying cannot fix (bad key, unknown model, ...)."""


class JudgeOutage(JudgeError):
    """Too few predictions got a verdict for a score to mean anything (endpoint down, every reply broken)."""


def default_key_env(base_url: str) -> str:
    """`OPENAI_API_KEY` for api.openai.com, `JUDGE_API_KEY` for every other endpoint."""
    return "OPENAI_API_KEY" if urllib.parse.urlsplit(base_url).hostname == OPENAI_HOST else "JUDGE_API_KEY"


def is_loopback(host: str | None) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@dataclass
class JudgeConfig:
    """Where and how to call the judge.

    Args:
        base_url: OpenAI-compatible API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
        model: judge model name sent in the request (the paper used `gpt-3.5-turbo`, whose snapshot has drifted).
        api_key_env: environment variable holding the key; default `OPENAI_API_KEY` for api.openai.com and
            `JUDGE_API_KEY` for any other endpoint. No Authorization header when unset or empty.
        temperature: sampling temperature sent to the judge (0.0 for repeatable verdicts; the original sent none).
        concurrency: parallel requests.
        max_retries: retries per sample after the first attempt (>= 0).
        timeout_s: deadline for a whole request (connect, headers and body), in seconds (> 0).
        backoff_s: first back-off delay, doubled per retry, capped at 60 s.
        cache_path: jsonl cache file; None disables caching.
        min_judged_fraction: fail (`JudgeOutage`) when fewer than this fraction of the predictions got a verdict;
            zero verdicts always fail.
    """

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-3.5-turbo"
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 64
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 1.0
    cache_path: str | None = None
    min_judged_fraction: float = 0.95

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"judge base_url must be an http(s) URL, got {self.base_url!r}")
        checks = {
            "max_retries": isinstance(self.max_retries, int) and self.max_retries >= 0,
            "concurrency": isinstance(self.concurrency, int) and self.concurrency >= 1,
            "max_tokens": isinstance(self.max_tokens, int) and self.max_tokens >= 1,
            "timeout_s": math.isfinite(self.timeout_s) and self.timeout_s > 0,
            "backoff_s": math.isfinite(self.backoff_s) and self.backoff_s >= 0,
            "min_judged_fraction": 0 <= self.min_judged_fraction <= 1,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid judge settings: {', '.join(bad)} (max_retries >= 0, concurrency >= 1, "
                             "max_tokens >= 1, timeout_s > 0, backoff_s >= 0, 0 <= min_judged_fraction <= 1)")
        if self.api_key_env is None:
            self.api_key_env = default_key_env(self.base_url)


class _Deadline:
    """Shuts the request's sockets down when `seconds` have passed, so no read can outlive the deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self.sockets.append(sock)
        if self.expired:
            self._expire()

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


class _DeadlineHandler:
    """Mixed into urllib's HTTP(S) handlers: each connection registers its socket with the deadline."""

    deadline: _Deadline

    def do_open(self, http_class, req, **kwargs):  # noqa: D102
        deadline = self.deadline

        class Connection(http_class):
            def connect(self):
                super().connect()
                deadline.watch(self.sock)

        return super().do_open(Connection, req, **kwargs)


class _HTTPHandler(_DeadlineHandler, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineHandler, urllib.request.HTTPSHandler):
    pass


def post_within(request: urllib.request.Request, seconds: float) -> bytes:
    """Send `request` and read the whole reply within `seconds` (connect, headers, body: a server that drips one
    byte a second cannot keep it waiting). Raises `TimeoutError` past the deadline, `urllib.error.HTTPError` etc."""
    handlers = [_HTTPHandler(), _HTTPSHandler()]
    with _Deadline(seconds) as deadline:
        for handler in handlers:
            handler.deadline = deadline
        try:
            with urllib.request.build_opener(*handlers).open(request, timeout=seconds) as response:
                body = response.read()
        except Exception as err:
            if deadline.expired:
                raise TimeoutError(f"no complete reply within {seconds:g} s") from err
            if isinstance(err, urllib.error.HTTPError):  # read the error body while the deadline still holds
                err.detail = _error_body(err)
            raise
        if deadline.expired:
            raise TimeoutError(f"no complete reply within {seconds:g} s")
    return body


def _error_body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read()[:300]
    except (OSError, http.client.HTTPException):
        return b""


class JudgeCache:
    """Append-only jsonl cache: one line `{"key", "judge_model", "reply"}` per successful judgement."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, str] = {}
        if self.path and self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    row = json.loads(line)
                    self._data[row["key"]] = row["reply"]
                except (json.JSONDecodeError, KeyError):
                    logger.warning("%s:%d: skipping a damaged judge-cache line", self.path, n)

    @staticmethod
    def key(model: str, system: str, user: str) -> str:
        return hashlib.sha256(json.dumps([model, system, user]).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock:
            self._data[key] = reply
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "judge_model": model, "reply": reply}) + "\n")


class ChatJudge:
    """Judge `{question, answer, pred}` records with the original prompt; see module docstring."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.cache = JudgeCache(config.cache_path)
        self.served_models: set[str] = set()
        url = urllib.parse.urlsplit(config.base_url)
        if os.environ.get(config.api_key_env) and url.scheme == "http" and not is_loopback(url.hostname):
            logger.warning(
                "The judge will send the API key in $%s over plain http to %s: anyone on the way can read it. Use "
                "https, or unset the variable if the server needs no key.", config.api_key_env, url.hostname
            )

    def identity(self) -> dict[str, object]:
        """Everything about the judge that affects a score, for the results file."""
        cfg = {k: v for k, v in asdict(self.config).items() if k not in ("cache_path",)}
        return {**cfg, "prompt_version": PROMPT_VERSION, "served_models": sorted(self.served_models)}

    def _post(self, user: str) -> str:
        cfg = self.config
        body = {
            "model": cfg.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if os.environ.get(cfg.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[cfg.api_key_env]}"
        request = urllib.request.Request(
            cfg.base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers
        )
        payload = json.loads(post_within(request, cfg.timeout_s).decode("utf-8"))
        if payload.get("model"):
            self.served_models.add(str(payload["model"]))
        return payload["choices"][0]["message"]["content"]

    def judge_one(self, record: Mapping) -> dict[str, object]:
        """One verdict `{"id", "pred", "score", "reply", "cached", "attempts"}`; pred/score None plus "error" on failure."""
        user = USER_TEMPLATE.format(question=record["question"], answer=record["answer"], pred=record["pred"])
        key = JudgeCache.key(self.config.model, SYSTEM_PROMPT, user)
        base = {"id": record["id"]}
        cached = self.cache.get(key)
        if cached is not None:
            try:
                return {**base, **parse_judgement(cached), "reply": cached, "cached": True, "attempts": 0}
            except JudgementParseError:
                logger.warning("sample %s: cached judge reply unparseable, asking again", record["id"])
        error = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                delay = min(60.0, self.config.backoff_s * 2 ** (attempt - 1)) * (1 + 0.1 * random.random())
                time.sleep(delay)
            try:
                reply = self._post(user)
                verdict = parse_judgement(reply)
            except urllib.error.HTTPError as e:
                if e.code in _FATAL_HTTP:
                    detail = getattr(e, "detail", b"")
                    raise JudgeError(f"judge endpoint {self.config.base_url} answered HTTP {e.code}: {detail!r}")
                error = f"HTTP {e.code}"
            except TimeoutError as e:
                error = f"timeout: {e}"
            except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException) as e:
                error = f"transport: {e!r}"
            except UnicodeDecodeError as e:
                error = f"malformed response: not UTF-8 (byte {e.start}: {e.object[e.start:e.start + 1]!r})"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
                error = f"malformed response: {e!r}"
            except JudgementParseError as e:
                error = str(e)
            else:
                self.cache.put(key, self.config.model, reply)
                return {**base, **verdict, "reply": reply, "cached": False, "attempts": attempt + 1}
            logger.debug("sample %s: judge attempt %d failed: %s", record["id"], attempt + 1, error)
        logger.warning("sample %s: judge gave up after %d attempts: %s", record["id"], attempt + 1, error)
        return {**base, "pred": None, "score": None, "error": error, "cached": False, "attempts": attempt + 1}

    def require_enough(self, verdicts: Sequence[Mapping]) -> None:
        """Raise `JudgeOutage` unless at least `min_judged_fraction` (and at least one) of `verdicts` succeeded."""
        judged = sum(v.get("pred") is not None and v.get("score") is not None for v in verdicts)
        need = self.config.min_judged_fraction
        if judged and judged >= need * len(verdicts):
            return
        errors = Counter(str(v.get("error")) for v in verdicts if v.get("pred") is None or v.get("score") is None)
        common = "; ".join(f"{n}x {e}" for e, n in errors.most_common(3))
        raise JudgeOutage(
            f"the judge {self.config.model} at {self.config.base_url} gave a verdict for only {judged} of "
            f"{len(verdicts)} predictions (at least {need:.0%} needed), so no score is reported. Most common "
            f"errors: {common}. Fix the endpoint and re-run: verdicts already given are cached."
        )

    def judge_many(self, records: Sequence[Mapping], progress: bool = True) -> list[dict[str, object]]:
        """Judge all records concurrently; results come back in input order. A fatal `JudgeError` cancels the
        requests not yet started."""
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency)
        futures = [pool.submit(self.judge_one, r) for r in records]
        bar = tqdm(total=len(futures), desc=f"judge {self.config.model}", disable=not progress)
        results = []
        try:
            for fut in futures:
                results.append(fut.result())
                bar.update(1)
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)
        return results
