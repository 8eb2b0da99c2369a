"""LLM judge for video QA over any OpenAI-compatible chat-completions endpoint (standard library only).

The prompts are the original Video-LLaVA / Video-ChatGPT ones (`videollava/eval/video/eval_video_qa.py`, SPEC §9.1).
Judgements are cached in a jsonl file keyed by (judge model, system prompt, user prompt), so a re-run costs nothing.
Requests run in a thread pool (`concurrency`), with retries and exponential back-off on transport errors,
HTTP 429/5xx and unparseable replies; other HTTP 4xx errors (bad key, unknown model) fail at once.

Example:
    judge = ChatJudge(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct"))
    verdicts = judge.judge_many([{"id": "1", "question": "...", "answer": "...", "pred": "..."}])
"""

import hashlib
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
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


class JudgeError(RuntimeError):
    """The judge endpoint rejected the request in a way retrying cannot fix (bad key, unknown model, ...)."""


@dataclass
class JudgeConfig:
    """Where and how to call the judge.

    Args:
        base_url: OpenAI-compatible API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
        model: judge model name sent in the request (the paper used `gpt-3.5-turbo`, whose snapshot has drifted).
        api_key_env: environment variable holding the key; no Authorization header when unset or empty.
        temperature: sampling temperature sent to the judge (0.0 for repeatable verdicts; the original sent none).
        concurrency: parallel requests.
        max_retries: retries per sample after the first attempt.
        timeout_s: socket timeout per request.
        backoff_s: first back-off delay, doubled per retry, capped at 60 s.
        cache_path: jsonl cache file; None disables caching.
    """

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-3.5-turbo"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 64
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 1.0
    cache_path: str | None = None


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
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            payload = json.loads(response.read().decode("utf-8"))
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
                    raise JudgeError(f"judge endpoint {self.config.base_url} answered HTTP {e.code}: {e.read()[:300]!r}")
                error = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                error = f"transport: {e}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                error = f"malformed response: {e!r}"
            except JudgementParseError as e:
                error = str(e)
            else:
                self.cache.put(key, self.config.model, reply)
                return {**base, **verdict, "reply": reply, "cached": False, "attempts": attempt + 1}
            logger.debug("sample %s: judge attempt %d failed: %s", record["id"], attempt + 1, error)
        logger.warning("sample %s: judge gave up after %d attempts: %s", record["id"], attempt + 1, error)
        return {**base, "pred": None, "score": None, "error": error, "cached": False, "attempts": attempt + 1}

    def judge_many(self, records: Sequence[Mapping], progress: bool = True) -> list[dict[str, object]]:
        """Judge all records concurrently; results come back in input order."""
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            futures = [pool.submit(self.judge_one, r) for r in records]
            bar = tqdm(total=len(futures), desc=f"judge {self.config.model}", disable=not progress)
            results = []
            for fut in futures:
                results.append(fut.result())
                bar.update(1)
            bar.close()
        return results
