"""The engine: cached multi-turn answers equal a fresh recomputation, batched answers equal one-by-one answers, the
media LRU is hit on a repeated clip and evicts beyond its bound, and bad turns leave the conversation intact."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.processing.media import make_video
from tests.tiny import tiny_config, tiny_tokenizer
from videollava.engine import Engine, GenerationSettings
from videollava.loading import ChatError
from videollava.media import MediaCache

QUESTIONS = ["what is in this video ?", "what colour ?", "describe it", "what shape ?"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A float64 tiny model (so prefix reuse and recomputation agree to the last bit) and its processor."""
    torch.manual_seed(0)
    config = tiny_config(num_frames=2)
    model = LanguageBindVideoLlavaForConditionalGeneration(config).double().eval()
    return model, build_processor(config, tiny_tokenizer())


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_video(root / "a.mp4", num_frames=12, size=(40, 32))
    make_video(root / "b.mp4", num_frames=9, size=(32, 40))
    Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "red.png")
    return root


def _fresh(model, processor, messages, max_new_tokens=4) -> str:
    """The reference: render everything, run the towers and generate without any cache."""
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_cached_multi_turn_equals_fresh_recomputation(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=4))
    conv = engine.conversation()
    video = engine.load("video", str(media_dir / "a.mp4"))
    image = engine.load("image", str(media_dir / "red.png"))
    turns = [(QUESTIONS[0], [video]), (QUESTIONS[1], []), (QUESTIONS[2], [image]), (QUESTIONS[3], [])]
    for i, (question, media) in enumerate(turns):
        pieces = list(conv.ask(question, media))
        assert "".join(pieces).strip() == conv.turns[-1].answer
        assert conv.turns[-1].answer == _fresh(model, processor, conv.messages()[:-1]), f"turn {i + 1}"
        if i:
            assert conv.last_stats.prefilled_tokens < conv.last_stats.prompt_tokens // 2
    assert engine.tower_calls == {"image": 1, "video": 1}  # each medium went through its tower once
    rendered = processor.apply_chat_template(conv.messages())
    assert rendered.count("<video>") == 1 and rendered.index("<video>") < rendered.index(QUESTIONS[0])


def test_engine_tokens_equal_the_processor(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor)
    conv = engine.conversation(system="a chat .")
    video, image = engine.load("video", str(media_dir / "a.mp4")), engine.load("image", str(media_dir / "red.png"))
    from videollava.engine import Turn

    ids, _ = engine._render(conv, Turn("describe it", [video, image]))
    prompt = processor.apply_chat_template(conv.messages(Turn("describe it", [video, image])),
                                           add_generation_prompt=True, tokenize=False)
    expected = processor(text=prompt, images=[image.data], videos=[video.data], return_tensors="pt")["input_ids"][0]
    assert torch.equal(ids, expected)


def test_batch_equals_one_by_one(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=5))
    a, b, c = (engine.load("video", str(media_dir / n)) for n in ("a.mp4", "b.mp4", "a.mp4"))
    image = engine.load("image", str(media_dir / "red.png"))
    singles = [engine.conversation().answer(q, m) for q, m in
               [(QUESTIONS[0], [a]), (QUESTIONS[1], [b, image]), ("what ?", [])]]
    convs = [engine.conversation() for _ in range(3)]
    batched = engine.answer_batch([(convs[0], QUESTIONS[0], [c]), (convs[1], QUESTIONS[1], [b, image]),
                                   (convs[2], "what ?")])
    assert batched == singles
    assert [conv.turns[-1].answer for conv in convs] == singles
    follow_up = convs[1].answer(QUESTIONS[2])  # a batched turn continues like any other
    assert follow_up == _fresh(model, processor, convs[1].messages()[:-1], max_new_tokens=5)


def test_media_cache_is_hit_on_a_repeated_video_and_evicts_beyond_its_bound(parts, media_dir, tmp_path):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=3))
    first = engine.conversation().answer(QUESTIONS[0], [engine.load("video", str(media_dir / "a.mp4"))])
    shutil.copy(media_dir / "a.mp4", tmp_path / "same_clip_uploaded_again.mp4")
    again = engine.conversation().answer(QUESTIONS[0], [engine.load("video", str(tmp_path /
                                                                                "same_clip_uploaded_again.mp4"))])
    assert again == first
    assert engine.tower_calls["video"] == 1 and engine.media_cache.hits == 1  # the new conversation cost no tower call

    one_video = engine.media_cache.bytes
    small = Engine(model, processor, MediaCache(max_bytes=int(one_video * 1.5)), GenerationSettings(max_new_tokens=2))
    for name in ("a.mp4", "b.mp4", "a.mp4"):  # b evicts a; a has to be encoded again
        small.conversation().answer(QUESTIONS[0], [small.load("video", str(media_dir / name))])
    assert small.tower_calls["video"] == 3 and small.media_cache.evictions == 2
    assert len(small.media_cache) == 1 and small.media_cache.bytes <= small.media_cache.max_bytes
    off = Engine(model, processor, MediaCache(max_bytes=0), GenerationSettings(max_new_tokens=2))
    for _ in range(2):
        off.conversation().answer(QUESTIONS[0], [off.load("video", str(media_dir / "a.mp4"))])
    assert off.tower_calls["video"] == 2 and len(off.media_cache) == 0


def test_other_media_behind_the_same_placeholders_are_not_reused(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=4))
    conv = engine.conversation()
    conv.answer(QUESTIONS[0], [engine.load("video", str(media_dir / "a.mp4"))])
    conv.truncate(0)  # "retry" with another clip: identical token ids, different video
    answer = conv.answer(QUESTIONS[0], [engine.load("video", str(media_dir / "b.mp4"))])
    assert answer == _fresh(model, processor, conv.messages()[:-1])
    video_tokens = processor.frame_seq_length * 2
    assert conv.last_stats.prefilled_tokens > video_tokens  # re-prefilled from the video on (the system prompt kept)


def test_bad_turns_leave_the_conversation_intact(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=3))
    conv = engine.conversation()
    first = conv.answer(QUESTIONS[0], [engine.load("video", str(media_dir / "a.mp4"))])
    with pytest.raises(ChatError, match="the model takes at most 512"):
        conv.answer("red " * 600)
    with pytest.raises(ChatError, match=r"not valid UTF-8 text \(byte b'\\xff' at character 5\)"):
        conv.answer("red \udcff green")
    with pytest.raises(ChatError, match="reserved placeholder"):
        conv.answer("what is <video> ?")
    assert [t.answer for t in conv.turns] == [first]
    assert conv.answer(QUESTIONS[1]) == _fresh(model, processor, conv.messages()[:-1])
    (media_dir / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    with pytest.raises(ChatError, match="cannot read video .*broken.mp4"):
        engine.load("video", str(media_dir / "broken.mp4"))


def test_closing_a_stream_stops_generation_and_the_next_turn_recovers(parts, media_dir):
    model, processor = parts
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=40))
    conv = engine.conversation()
    stream = conv.ask(QUESTIONS[0], [engine.load("video", str(media_dir / "a.mp4"))])
    next(stream, None)
    stream.close()
    assert conv.turns == [] and not engine.lock.locked()
    answer = conv.answer(QUESTIONS[0], [engine.load("video", str(media_dir / "a.mp4"))])
    assert answer == _fresh(model, processor, conv.messages()[:-1], max_new_tokens=40)
