"""Video-grouped evaluation (shared prefix KV cache) against the per-question path, on a tiny real model."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from evaluation import grouped, runner
from evaluation.predictions import read_predictions
from evaluation.tasks import Sample
from modeling_videollava.modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.processing.media import make_video
from tests.tiny import tiny_config, tiny_tokenizer


SETTINGS = runner.GenerationSettings(max_new_tokens=6)
QUESTIONS = ["what is moving ?", "what colour is the shape ?", "is it moving left or right ?", "describe it"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A float64 tiny model whose LLM weights are redrawn large enough that answers depend on the question."""
    torch.manual_seed(0)
    config = tiny_config()
    model = LanguageBindVideoLlavaForConditionalGeneration(config).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and ("language_model" in name or "lm_head" in name or "projector" in name):
                p.normal_(0, 0.5 if "embed" in name else 0.3)
    processor = build_processor(config, tiny_tokenizer())
    d = tmp_path_factory.mktemp("media")
    make_video(d / "a.mp4", num_frames=6)
    make_video(d / "b.mp4", num_frames=6, size=(40, 32))
    Image.new("RGB", (30, 30), "red").save(d / "i.png")
    samples = [
        Sample(f"{name}#{k}", q, [(kind, str(d / name))], "x")
        for name, kind in [("a.mp4", "video"), ("i.png", "image"), ("b.mp4", "video")]
        for k, q in enumerate(QUESTIONS)
    ]
    samples.append(Sample("lone", "what is moving ?", [("video", str(d / "b.mp4")), ("image", str(d / "i.png"))], "x"))
    reference = {s.id: runner.generate_answers(model, processor, [s], SETTINGS)[0] for s in samples}
    assert len(set(reference.values())) > 3, "answers must depend on the question for this test to mean anything"
    return model, processor, samples, reference


def _predictions(out: Path) -> dict[str, str]:
    return {r["id"]: r["pred"] for f in (out / "shards").glob("*.jsonl") for r in read_predictions(f)}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_grouped_equals_per_question(setup, tmp_path, batch_size):
    model, processor, samples, reference = setup
    calls = {"video": 0, "image": 0}
    hooks = [getattr(model.model, f"{kind}_tower").embeddings.register_forward_hook(
        lambda *_, kind=kind: calls.__setitem__(kind, calls[kind] + 1)) for kind in calls]  # fmt: skip
    try:
        n = runner.run_generation(samples, tmp_path, model, processor, SETTINGS, batch_size, runner.generate_answers,
                                  progress=False, prefix_cache=True)  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    assert n == len(samples)
    assert _predictions(tmp_path) == reference
    # one tower pass per video/image group (+ the lone two-media sample), not one per question
    assert calls == {"video": 3, "image": 2}


def test_resume_in_the_middle_of_a_video_and_two_ranks(setup, tmp_path):
    model, processor, samples, reference = setup
    # a first run (per question) stopped after two questions of the first video and one of the image
    first = [samples[0], samples[1], samples[4]]
    runner.run_generation(first, tmp_path, model, processor, SETTINGS, 2, runner.generate_answers, progress=False)
    for rank in (0, 1):
        runner.run_generation(samples, tmp_path, model, processor, SETTINGS, 3, runner.generate_answers,
                              rank=rank, world_size=2, progress=False, prefix_cache=True)  # fmt: skip
    records = [r for f in (tmp_path / "shards").glob("*.jsonl") for r in read_predictions(f)]
    assert sorted(r["id"] for r in records) == sorted(s.id for s in samples)  # each question exactly once
    assert _predictions(tmp_path) == reference


def test_shard_by_media_keeps_groups_together():
    samples = [Sample(f"{v}{k}", "q", [("video", v)], "x") for v in "abcd" for k in range(3)]
    shards = [grouped.shard_by_media(samples, r, 2) for r in (0, 1)]
    assert [s.id for s in shards[0] + shards[1]] == [s.id for s in samples]
    assert {s.media[0][1] for s in shards[0]}.isdisjoint({s.media[0][1] for s in shards[1]})


def test_videollava_eval_cli_prefix_cache_on_and_off(setup, tmp_path, monkeypatch, capsys):
    """Through `videollava eval`: the default (grouped) and `--no-prefix-cache` write the same predictions."""
    import json

    from videollava.cli import main

    model, processor, _, _ = setup
    data = tmp_path / "shapes"
    data.mkdir()
    items = []
    for clip in range(2):
        make_video(data / f"clip{clip}.mp4", num_frames=6, size=(64 - 16 * clip, 48))
        for k, question in enumerate(QUESTIONS[: 3 - clip]):
            items.append({"id": f"c{clip}q{k}", "video": f"clip{clip}.mp4", "question_type": "static",
                          "conversations": [{"from": "human", "value": f"<video>\n{question}"},
                                            {"from": "gpt", "value": "square"}]})  # fmt: skip
    (data / "shapes.json").write_text(json.dumps(items))
    monkeypatch.setattr(runner, "load_model_and_processor", lambda *a, **k: (model, processor))
    preds = {}
    for name, extra in (("grouped", []), ("per_question", ["--no-prefix-cache"])):
        out = tmp_path / name
        argv = ["eval", "--task", "shapes", "--model", "tiny", "--data", str(data), "--output", str(out),
                "--batch-size", "2", "--max-new-tokens", "6", "--dtype", "float32", "--no-progress", *extra]
        assert main(argv) == 0
        capsys.readouterr()
        assert json.loads((out / "run_config.json").read_text())["prefix_cache"] is (name == "grouped")
        preds[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds["grouped"]] == [item["id"] for item in items]
    assert preds["grouped"] == preds["per_question"]
    assert len({p["pred"] for p in preds["grouped"]}) > 1


def test_videollava_eval_cli_bad_video_is_one_line_error(setup, tmp_path, monkeypatch):
    """A video that cannot be decoded stops `videollava eval` with one line naming the sample and the file."""
    import json

    from videollava.cli import main

    model, processor, _, _ = setup
    data = tmp_path / "shapes"
    data.mkdir()
    make_video(data / "ok.mp4", num_frames=6)
    (data / "bad.mp4").write_bytes((data / "ok.mp4").read_bytes()[:300])
    items = [{"id": f"{name}{k}", "video": f"{name}.mp4", "question_type": "static",
              "conversations": [{"from": "human", "value": f"<video>\n{q}"}, {"from": "gpt", "value": "square"}]}
             for name in ("ok", "bad") for k, q in enumerate(QUESTIONS[:2])]  # fmt: skip
    (data / "shapes.json").write_text(json.dumps(items))
    monkeypatch.setattr(runner, "load_model_and_processor", lambda *a, **k: (model, processor))
    out = tmp_path / "out"
    argv = ["eval", "--task", "shapes", "--model", "tiny", "--data", str(data), "--output", str(out),
            "--batch-size", "2", "--max-new-tokens", "4", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert "\n" not in message and "bad0" in message and "bad.mp4" in message and "resume" in message
    assert sorted(_predictions(out)) == ["ok0", "ok1"]  # the group answered before the bad video is kept
