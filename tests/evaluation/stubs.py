"""Stand-ins for the model/processor pair, for runner plumbing tests only (the real loop is in test_end_to_end)."""

import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from evaluation.runner import GenerationSettings
from evaluation.tasks import Sample


class StubModel:
    """Answers with the last word of the prompt; records which ids it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.config = None

    def parameters(self):
        return iter(())


class StubProcessor:
    chat_template = "{{ stub }}"


def stub_generate(model: StubModel, processor: StubProcessor, batch: Sequence[Sample], settings: GenerationSettings):
    model.seen.extend(s.id for s in batch)
    kill_after = os.environ.get("STUB_KILL_AFTER")
    if kill_after and len(model.seen) > int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)  # simulate a crash mid-run
    return [s.prompt.split()[-1].strip("?") for s in batch]


def write_shapes(root: Path, n: int = 6) -> Path:
    """A shapes-format JSON with n items (media files are empty placeholders: stubs never decode them)."""
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        (root / f"clip{i}.mp4").write_bytes(b"")
        kind = "static" if i % 2 else "temporal"
        items.append({"id": f"q{i}", "video": f"clip{i}.mp4", "question_type": kind,
                      "conversations": [{"from": "human", "value": f"<video>\nWhat moves? say w{i}"},
                                        {"from": "gpt", "value": f"w{i}" if i != 5 else "nope"}]})  # fmt: skip
    path = root / "shapes.json"
    path.write_text(json.dumps(items))
    return path
