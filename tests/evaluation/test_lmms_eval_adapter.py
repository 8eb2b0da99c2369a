"""The lmms-eval adapter called the way lmms-eval calls a model (lmms-eval itself is not installed)."""

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from evaluation import lmms_eval_adapter
from evaluation.lmms_eval_adapter import VideoLlavaLB, settings_from_gen_kwargs


@dataclass
class FakeInstance:
    """The fields of `lmms_eval.api.instance.Instance` that models read."""

    request_type: str
    arguments: tuple
    idx: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def args(self) -> tuple:
        return self.arguments


def test_gen_kwargs_are_honoured():
    s = settings_from_gen_kwargs({"max_new_tokens": 16, "temperature": 0, "top_p": None, "num_beams": 1})
    assert (s.max_new_tokens, s.do_sample, s.temperature) == (16, False, None)
    s = settings_from_gen_kwargs({"max_new_tokens": 5, "temperature": 0.2})
    assert s.do_sample and s.temperature == 0.2
    assert settings_from_gen_kwargs({"max_gen_toks": 7}).max_new_tokens == 7


def test_generate_until_batches_multi_visual_docs_in_order(monkeypatch, tmp_path):
    calls: list[tuple[list, Any]] = []

    def fake_generate(model, processor, batch, settings):
        calls.append(([(s.prompt, [k for k, _ in s.media]) for s in batch], settings))
        return [f"answer {s.id}. extra" for s in batch]

    monkeypatch.setattr(lmms_eval_adapter, "generate_answers", fake_generate)
    image = Image.new("RGB", (8, 8))
    docs = {"t": {"test": [{"v": ["a.mp4", image]}, {"v": [image, image]}, {"v": ["b.mkv"]}]}}
    model = VideoLlavaLB(model=object(), processor=object(), batch_size=2)
    model.task_dict = docs
    greedy = {"max_new_tokens": 8, "temperature": 0, "until": ["."]}
    requests = [
        FakeInstance("generate_until", ("<video>\nWhat happens?", greedy, lambda d: d["v"], 0, "t", "test")),
        FakeInstance("generate_until", ("Compare the images.", {"max_new_tokens": 3}, lambda d: d["v"], 1, "t", "test")),
        FakeInstance("generate_until", ("Describe.", greedy, lambda d: d["v"], 2, "t", "test")),
    ]
    out = model.generate_until(requests)
    assert out == ["answer t/test/0", "answer t/test/1. extra", "answer t/test/2"]  # order kept, `until` applied
    (first, s1), (second, s2) = calls
    assert first == [("What happens?", ["video", "image"]), ("Describe.", ["video"])]  # batch of 2, same kwargs
    assert second == [("Compare the images.", ["image", "image"])]
    assert s1.max_new_tokens == 8 and not s1.do_sample and s2.max_new_tokens == 3


def test_plugin_table_points_at_the_adapter():
    from evaluation.lmms_plugin.models import AVAILABLE_MODELS
    from evaluation.lmms_plugin.models.videollava_lb import VideoLlavaLB as Plugged

    assert AVAILABLE_MODELS == {"videollava_lb": "VideoLlavaLB"} and Plugged is VideoLlavaLB
