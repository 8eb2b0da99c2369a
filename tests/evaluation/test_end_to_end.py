"""The whole loop on the tiny random model over synthetic videos: CLI generate -> predictions -> metrics -> report,
and the lmms-eval adapter on the same model, with the real `LanguageBindVideoLlavaProcessor`.
"""

import json

import torch
from PIL import Image

from evaluation import runner
from evaluation.lmms_eval_adapter import VideoLlavaLB
from evaluation.tasks import load_shapes
from modeling_videollava.modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from tests.evaluation.test_lmms_eval_adapter import FakeInstance
from processing import build_processor
from tests.processing.media import make_video
from tests.tiny import tiny_config, tiny_tokenizer
from videollava.cli import main


def _tiny():
    config = tiny_config()
    return LanguageBindVideoLlavaForConditionalGeneration(config).eval(), build_processor(config, tiny_tokenizer())


def test_cli_loop_on_tiny_model(tmp_path, monkeypatch, capsys):
    data = tmp_path / "shapes"
    data.mkdir()
    items = []
    for i in range(3):
        make_video(data / f"clip{i}.mp4", num_frames=6)
        items.append({"id": f"q{i}", "video": f"clip{i}.mp4", "question_type": "temporal" if i else "static",
                      "conversations": [{"from": "human", "value": "<video>\nwhat is moving ?"},
                                        {"from": "gpt", "value": "square"}]})  # fmt: skip
    (data / "shapes.json").write_text(json.dumps(items))
    model, processor = _tiny()
    monkeypatch.setattr(runner, "load_model_and_processor", lambda *a, **k: (model, processor))
    out = tmp_path / "out"
    argv = ["eval", "--task", "shapes", "--model", "tiny", "--data", str(data), "--output", str(out),
            "--batch-size", "2", "--max-new-tokens", "4", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["count"] == 3 and set(result["metrics"]) >= {"accuracy_static", "accuracy_temporal"}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["q0", "q1", "q2"] and all(isinstance(p["pred"], str) for p in preds)
    config = json.loads((out / "run_config.json").read_text())
    assert config["dtype"] == "float32" and config["num_frames"] == 2
    assert config["prompt"]["example"].startswith("A chat between a curious user")
    assert config["prompt"]["example"].endswith(" USER: <video>\nwhat is moving ? ASSISTANT:")

    # Greedy decoding is deterministic, and batching does not change the answer (left padding).
    one = runner.generate_answers(model, processor, load_shapes(data)[:1], runner.GenerationSettings(4))
    assert one[0] == preds[0]["pred"]


def test_lmms_adapter_on_tiny_model(tmp_path):
    model, processor = _tiny()
    make_video(tmp_path / "a.mp4", num_frames=6)
    adapter = VideoLlavaLB(model=model, processor=processor, batch_size=2)
    adapter.task_dict = {"t": {"test": [{"v": [str(tmp_path / "a.mp4")]}, {"v": [Image.new("RGB", (20, 20))]}]}}
    kwargs = {"max_new_tokens": 3, "temperature": 0, "until": []}
    reqs = [FakeInstance("generate_until", ("<video>\nwhat is moving ?", kwargs, lambda d: d["v"], i, "t", "test"))
            for i in range(2)]  # fmt: skip
    out = adapter.generate_until(reqs)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert torch.is_grad_enabled()  # inference_mode is scoped to generate
