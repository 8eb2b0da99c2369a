"""Synthetic shapes generator and tiny tokenizer: determinism, held-out split, media content vs answers, vocabulary."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from shapes_media import BACKGROUND, PALETTE, read_mp4, shape_mask  # noqa: E402
from synthetic_shapes import (  # noqa: E402
    HELDOUT_COMBOS,
    SHAPES,
    SPLITS,
    VOCAB,
    caption,
    generate,
    moving_combos,
    questions,
    sample_scene,
)
from tiny_tokenizer import build_tokenizer, tokenizer_words, words  # noqa: E402


NUM_TRAIN, NUM_HELDOUT, NUM_FRAMES, SIZE = 48, 16, 8, 64


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    data = generate(a, seed=0, num_train=NUM_TRAIN, num_heldout=NUM_HELDOUT, num_frames=NUM_FRAMES, size=SIZE)
    generate(b, seed=0, num_train=NUM_TRAIN, num_heldout=NUM_HELDOUT, num_frames=NUM_FRAMES, size=SIZE, workers=2)
    return a, b, data


def load(root: Path, item: dict) -> np.ndarray:
    if "video" in item:
        return read_mp4(root / item["video"])
    return np.asarray(Image.open(root / item["image"]).convert("RGB"))[None]


# --- a pixel oracle: answers every question template from the rendered frames alone ---

NAMES = list(PALETTE)
REF = np.array([PALETTE[c] for c in NAMES] + [BACKGROUND], dtype=np.float32)


def colour_masks(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Per palette colour (or background), the pixels nearest to it; masks under 40 pixels are dropped."""
    nearest = np.linalg.norm(frame[..., None, :].astype(np.float32) - REF, axis=-1).argmin(-1)
    masks = {c: nearest == i for i, c in enumerate(NAMES)}
    return {c: m for c, m in masks.items() if m.sum() >= 40}


def shape_of(mask: np.ndarray) -> str:
    """The shape whose template, centred on the mask's bounding box, overlaps the mask best (IoU)."""
    ys, xs = np.nonzero(mask)
    cx, cy, size = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, mask.shape[0]
    iou = {s: (mask & (t := shape_mask(s, cx, cy, size / 8, size))).sum() / (mask | t).sum() for s in SHAPES}
    return max(iou, key=iou.get)


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(np.abs(frame.astype(int) - BACKGROUND).sum(-1) > 150)
    return np.array([xs.mean(), ys.mean()])


def oracle(frames: np.ndarray, q: str) -> str:
    num = {1: "one", 2: "two", 3: "three"}
    per_frame = [colour_masks(f) for f in frames]
    first, last = per_frame[0], per_frame[-1]
    shapes = {c: shape_of(m) for c, m in first.items()}
    shapes.update({c: shape_of(m) for c, m in last.items() if c not in shapes})
    dx, dy = centroid(frames[-1]) - centroid(frames[0])
    moved = max(abs(dx), abs(dy)) > 5
    direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    q = q.removeprefix("<video>\n").removeprefix("<image>\n")
    if q == "What colour is the shape?":
        (c,) = {c for m in per_frame for c in m}
        return c
    if q == "What shape is it?":
        return shape_of(next(iter(first.values())))
    if q.startswith("Which way"):
        return direction
    if q in ("Does the shape move?", "Do the shapes move?"):
        return "yes" if moved else "no"
    if q == "Does the shape change colour?":
        return "yes" if len({c for m in per_frame for c in m}) > 1 else "no"
    if q == "What colour is the shape at the start?":
        (c,) = first
        return c
    if q == "What colour is the shape at the end?":
        (c,) = last
        return c
    if q in ("How many shapes are there?", "How many shapes are there at the start?"):
        return num[len(first)]
    if q == "How many shapes are there at the end?":
        return num[len(last)]
    if q == "Which shape appeared first?":
        (c,) = first
        return f"the {shapes[c]}"
    if q == "Which shape appeared last?":
        onset = {c: min(t for t, m in enumerate(per_frame) if c in m) for c in last}
        return f"the {shapes[max(onset, key=onset.get)]}"
    if q == "Which shape disappears?":
        (c,) = set(first) - set(last)
        return f"the {shapes[c]}"
    if q.startswith("What colour is the "):
        s = q.removeprefix("What colour is the ").removesuffix("?")
        (c,) = [c for c, v in shapes.items() if v == s]
        return c
    if q.startswith("Which shape is "):
        return f"the {shapes[q.removeprefix('Which shape is ').removesuffix('?')]}"
    if q.startswith("Is there a "):
        c, s = q.removeprefix("Is there a ").removesuffix("?").split()
        return "yes" if shapes.get(c) == s else "no"
    raise AssertionError(f"no oracle for {q!r}")


def qa_pairs(item: dict) -> list[tuple[str, str]]:
    conv = item["conversations"]
    return [(conv[i]["value"], conv[i + 1]["value"]) for i in range(0, len(conv), 2)]


# --- tests ---


def test_files_and_schema(generated):
    root, _, data = generated
    assert {p.name for p in root.glob("*.json")} == {"stage1.json", "stage2.json", "heldout.json",
                                                     "heldout_captions.json"}
    assert len(data["stage1"]) == len(data["stage2"]) == NUM_TRAIN and len(data["heldout"]) == NUM_HELDOUT
    kinds = set()
    for item in data["stage1"]:
        (media,) = {"image", "video"} & set(item)
        kinds.add(media)
        human, gpt = item["conversations"]
        assert human == {"from": "human", "value": f"<{media}>\nDescribe the {media}."} and gpt["from"] == "gpt"
    assert kinds == {"image", "video"}
    for item in data["stage2"] + data["heldout"]:
        (media,) = {"image", "video"} & set(item)
        conv = item["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith(f"<{media}>\n") and all("<" not in t["value"] for t in conv[1:])
        types = item.get("question_types") or [item["question_type"]]
        assert len(types) == len(conv) // 2 and set(types) <= {"static", "temporal"}
        assert ("question_type" in item) == (len(conv) == 2)
        assert all(1 <= len(t["value"].split()) <= 2 for t in conv[1::2])
    all_types = [t for x in data["stage2"] for t in x.get("question_types", [x.get("question_type")])]
    assert {"static", "temporal"} <= set(all_types)


def test_deterministic(generated, tmp_path):
    a, b, _ = generated  # b was written with 2 worker processes
    for name in ("stage1.json", "stage2.json", "heldout.json", "heldout_captions.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    media = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".png", ".mp4"))
    assert len(media) == NUM_TRAIN + NUM_HELDOUT
    for rel in media:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    other = generate(tmp_path, seed=1, num_train=8, num_heldout=0)
    assert json.dumps(other["stage2"]) != json.dumps(json.loads((a / "stage2.json").read_text())[:8])


def test_heldout_disjoint(generated):
    _, _, data = generated
    assert not {x["id"] for x in data["stage2"]} & {x["id"] for x in data["heldout"]}


def test_heldout_captions_caption_the_heldout_media(generated):
    root, _, data = generated
    captions = json.loads((root / "heldout_captions.json").read_text())
    assert captions == data["heldout_captions"]
    assert [(x["id"], x.get("image"), x.get("video")) for x in captions] == [
        (x["id"], x.get("image"), x.get("video")) for x in data["heldout"]]
    for item, qa in zip(captions, data["heldout"]):
        (media,) = {"image", "video"} & set(item)
        assert item["conversations"][0] == {"from": "human", "value": f"<{media}>\nDescribe the {media}."}
        rng = np.random.default_rng(np.random.SeedSequence([0, SPLITS["heldout"], int(item["id"].split("_")[1])]))
        assert item["conversations"][1] == {"from": "gpt", "value": caption(sample_scene(rng, heldout=True))}
    assert SPLITS["train"] != SPLITS["heldout"]
    train = [sample_scene(np.random.default_rng([0, SPLITS["train"], i])) for i in range(400)]
    held = [sample_scene(np.random.default_rng([0, SPLITS["heldout"], i]), heldout=True) for i in range(400)]
    assert not any(moving_combos(o) & HELDOUT_COMBOS for s in train for o in s.objs)
    moving = [s for s in held if s.objs[0].direction != "none"]
    assert len(moving) > 50 and all(moving_combos(s.objs[0]) & HELDOUT_COMBOS for s in moving)
    assert len(HELDOUT_COMBOS) == 12 and {c[2] for c in HELDOUT_COMBOS} == {"left", "right", "up", "down"}


def test_videos_decode(generated):
    root, _, data = generated
    videos = [x for x in data["stage2"] + data["heldout"] if "video" in x]
    assert len(videos) > 20
    for item in videos:
        frames = read_mp4(root / item["video"])
        assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3)


def test_answers_match_pixels(generated):
    root, _, data = generated
    checked: dict[str, set[str]] = {}
    for item in data["stage2"] + data["heldout"]:
        frames = load(root, item)
        for q, a in qa_pairs(item):
            assert oracle(frames, q) == a, (item["id"], q, a)
            checked.setdefault(q.split("\n")[-1], set()).add(a)
    for q in ("Which shape appeared first?", "Which shape disappears?", "What shape is it?",
              "How many shapes are there at the end?", "What colour is the shape at the end?"):
        assert q in checked
    assert checked["Does the shape change colour?"] == {"yes", "no"}
    assert len(checked["Which way does the shape move?"]) >= 2


def test_captions_match_pixels(generated):
    root, _, data = generated
    for item in data["stage1"]:
        frames, text = load(root, item), item["conversations"][1]["value"]
        per_frame = [colour_masks(f) for f in frames]
        assert {w for w in words(text) if w in PALETTE} == {c for m in per_frame for c in m}, text
        shapes = {shape_of(m) for masks in per_frame for m in masks.values()}
        assert {w for w in words(text) if w in SHAPES} == shapes, text
        if "moves" in text or "move " in text:
            assert oracle(frames, "Which way does the shape move?") in words(text), text
        elif "video" in item and "appears" not in text and "disappears" not in text:
            assert oracle(frames, "Does the shape move?") == "no", text


def test_tokenizer_layout():
    tok = build_tokenizer()
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token == "<pad>" and tok.convert_tokens_to_ids("<pad>") == len(tok) - 1
    assert tok.convert_tokens_to_ids(["<image>", "<video>"]) == [len(tok) - 3, len(tok) - 2]
    assert set(VOCAB) <= set(tokenizer_words()) and "USER" in tok.get_vocab() and "ASSISTANT" in tok.get_vocab()
    ids = tok("USER: <video>\nWhat colour is the shape? ASSISTANT: red.", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["USER", ":", "<video>", "\n", "What", "colour", "is", "the", "shape",
                                              "?", "ASSISTANT", ":", "red", "."]
    assert tok.decode(ids, skip_special_tokens=True) == "USER:\n What colour is the shape? ASSISTANT: red."
    assert tok.decode(tok("the user's questions.").input_ids, skip_special_tokens=True) == "the user's questions."


def test_tokenizer_covers_generated_text(generated):
    _, _, data = generated
    tok = build_tokenizer()
    texts = [t["value"] for x in data["stage1"] + data["stage2"] + data["heldout"] for t in x["conversations"]]
    rng = np.random.default_rng(0)
    for i in range(600):  # more scenes than rendered, to reach every template
        scene = sample_scene(np.random.default_rng([7, i]), heldout=i % 2 == 1)
        texts += [caption(scene)] + [w for q, a, _ in questions(scene, rng) for w in (q, a)]
    used = set()
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids, text
        assert [t for t in tok.convert_ids_to_tokens(ids)] == words(text)
        used.update(w for w in words(text) if w not in ("<image>", "<video>", "\n"))
    assert used == set(VOCAB)  # the closed vocabulary is exactly what the generator emits
    answers = {t["value"] for x in data["stage2"] + data["heldout"] for t in x["conversations"][1::2]}
    for answer in answers:
        assert tok.decode(tok(answer).input_ids, skip_special_tokens=True) == answer
