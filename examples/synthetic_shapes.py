"""Synthetic instruction data for a tiny Video-LLaVA: coloured shapes that move, appear, disappear and change colour.

Every sample is drawn from its own seed (`SeedSequence([seed, split, index])`), so output is reproducible: the same
`--seed` gives byte-identical JSON and identical media. Files written under `--out`:

    images/*.png, videos/*.mp4    64x64 PNG stills and 8-frame H.264 clips
    stage1.json                   captions, one turn: "<image>\\nDescribe the image." -> "Two shapes: a red ..."
    stage2.json                   multi-turn QA on the same media; answers are one or two words
    heldout.json                  QA on held-out media: other seeds, and every moving primary shape uses a
                                  (shape, colour, direction) combination in HELDOUT_COMBOS, never seen in training
    heldout_captions.json         captions of the held-out media, in the stage1.json format (retrieval evaluation
                                  of the aligned towers, `training.alignment`)

QA items carry `question_type` ("static": answerable from one frame; "temporal": needs motion or order) when they
have one question, otherwise `question_types`, aligned with the gpt turns. All text uses the closed `VOCAB`.

Run as:
    python examples/synthetic_shapes.py --out data/shapes --seed 0 --num-train 2000 --num-heldout 200
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from shapes_media import PALETTE, Obj, render_frames, save_mp4, save_png


COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
KINDS: dict[str, float] = {
    "image": 0.25, "motion": 0.2, "change": 0.15, "appear": 0.125, "disappear": 0.125, "count": 0.15
}
SPLITS: dict[str, int] = {"train": 0, "heldout": 1}
# One held-out direction per (shape, colour): 12 of the 48 moving combinations, each direction 3 times.
HELDOUT_COMBOS: frozenset[tuple[str, str, str]] = frozenset(
    (s, c, DIRECTIONS[(i + j) % 4]) for i, s in enumerate(SHAPES) for j, c in enumerate(COLOURS)
)
# Every word the generator can emit (questions, answers, captions, prompts); `\n` is a token of its own.
VOCAB: tuple[str, ...] = tuple(
    sorted(
        set(COLOURS + SHAPES + DIRECTIONS + tuple(NUMBERS.values()))
        | set(
            "A a the Two Three shapes shape moves move stays stay still and turns is are shown then appears "
            "disappears What colour it How many there Which way do does Does Do change at start end appeared "
            "first last Is yes no Describe image video . , : ?".split()
        )
    )
)


@dataclass(frozen=True)
class Scene:
    kind: str
    objs: tuple[Obj, ...]
    num_frames: int  # 1 for images
    size: int

    @property
    def is_video(self) -> bool:
        return self.kind != "image"


def _lanes(size: int) -> list[float]:
    return [size * (2 * k + 1) / 6 for k in range(3)]


def _static_cells(rng: np.random.Generator, n: int, size: int) -> list[tuple[float, float]]:
    lanes = _lanes(size)
    cells = rng.choice(9, size=n, replace=False)
    return [(lanes[c % 3] + rng.uniform(-2, 2), lanes[c // 3] + rng.uniform(-2, 2)) for c in cells]


def _paths(rng: np.random.Generator, n: int, direction: str, size: int) -> list[tuple[tuple, tuple]]:
    """Start/end centres for `n` shapes moving the same way in distinct lanes, each travelling over half the frame."""
    half, lanes = size / 8, _lanes(size)
    out = []
    for lane in rng.choice(3, size=n, replace=False):
        a, b = half + 1 + rng.uniform(0, 4), size - half - 1 - rng.uniform(0, 4)
        if direction in ("left", "up"):
            a, b = b, a
        across = lanes[lane] + rng.uniform(-1.5, 1.5)
        out.append(((a, across), (b, across)) if direction in ("left", "right") else ((across, a), (across, b)))
    return out


def _draw(rng: np.random.Generator, kind: str, T: int, size: int) -> tuple[Obj, ...]:
    n = {"image": int(rng.integers(1, 4)), "appear": int(rng.integers(2, 4)), "disappear": int(rng.integers(2, 4))}
    n = n.get(kind, int(rng.integers(1, 4)) if kind == "count" else 1)
    shapes, colours = rng.permutation(SHAPES)[:n].tolist(), rng.permutation(COLOURS)[:n].tolist()
    moving = kind == "motion" or (kind in ("change", "count") and rng.random() < 0.5)
    if moving:
        paths = _paths(rng, n, str(rng.choice(DIRECTIONS)), size)
    else:
        paths = [(p, p) for p in _static_cells(rng, n, size)]
    objs = [Obj(s, c, st, en) for s, c, (st, en) in zip(shapes, colours, paths)]
    if kind == "change":
        new = str(rng.choice([c for c in COLOURS if c != colours[0]]))
        at = int(rng.integers(T // 4, 3 * T // 4 + 1))
        objs[0] = Obj(shapes[0], colours[0], *paths[0], new_colour=new, change_at=at)
    elif kind == "appear":  # first shape visible from frame 0, the others appear one by one
        frames = [0] + sorted(rng.choice(np.arange(2, T - 1), size=n - 1, replace=False).tolist())
        objs = [Obj(o.shape, o.colour, o.start, o.end, appear=int(f)) for o, f in zip(objs, frames)]
    elif kind == "disappear":  # one shape (never the first, which questions rely on) vanishes mid-clip
        k = int(rng.integers(1, n))
        objs[k] = Obj(shapes[k], colours[k], *paths[k], vanish=int(rng.integers(2, T - 1)))
    return tuple(objs)


def moving_combos(obj: Obj) -> set[tuple[str, str, str]]:
    if obj.direction == "none":
        return set()
    return {(obj.shape, c, obj.direction) for c in (obj.colour, obj.new_colour) if c is not None}


def sample_scene(rng: np.random.Generator, heldout: bool = False, num_frames: int = 8, size: int = 64) -> Scene:
    """Draw a scene; training scenes avoid HELDOUT_COMBOS entirely, held-out moving scenes use one for objs[0]."""
    kind = str(rng.choice(list(KINDS), p=list(KINDS.values())))
    T = 1 if kind == "image" else num_frames
    while True:
        objs = _draw(rng, kind, T, size)
        if heldout:
            if objs[0].direction == "none" or moving_combos(objs[0]) & HELDOUT_COMBOS:
                return Scene(kind, objs, T, size)
        elif not any(moving_combos(o) & HELDOUT_COMBOS for o in objs):
            return Scene(kind, objs, T, size)


def _listing(objs: tuple[Obj, ...] | list[Obj]) -> str:
    names = [f"a {o.colour} {o.shape}" for o in objs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def caption(scene: Scene) -> str:
    objs, o = scene.objs, scene.objs[0]
    one = f"A {o.colour} {o.shape}"
    if scene.kind == "image" or (scene.kind == "count" and len(objs) == 1 and o.direction == "none"):
        body = f"{one}" if len(objs) == 1 else f"{NUMBERS[len(objs)].capitalize()} shapes: {_listing(objs)}"
        return body + (" stays still." if scene.is_video else ".")
    if scene.kind in ("motion", "count") and len(objs) == 1:
        return f"{one} moves {o.direction}."
    if scene.kind == "count":
        verb = "stay still" if o.direction == "none" else f"move {o.direction}"
        return f"{NUMBERS[len(objs)].capitalize()} shapes {verb}: {_listing(objs)}."
    if scene.kind == "change":
        return f"{one} {'' if o.direction == 'none' else f'moves {o.direction} and '}turns {o.new_colour}."
    if scene.kind == "appear":
        return f"{one} is shown, " + ", ".join(f"then {_listing([b])} appears" for b in objs[1:]) + "."
    gone = next(b for b in objs if b.vanish is not None)
    return f"{_listing(objs).capitalize()} are shown, then the {gone.shape} disappears."


def questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """All (question, answer, question_type) pairs that the scene answers unambiguously."""
    objs, o, n = scene.objs, scene.objs[0], len(scene.objs)
    S, Tm = "static", "temporal"
    qs: list[tuple[str, str, str]] = []
    if scene.kind == "image":
        if n == 1:
            qs += [("What colour is the shape?", o.colour, S), ("What shape is it?", o.shape, S)]
        else:
            a, b = rng.permutation(n)[:2]
            qs += [(f"What colour is the {objs[a].shape}?", objs[a].colour, S)]
            qs += [(f"Which shape is {objs[b].colour}?", f"the {objs[b].shape}", S)]
        present = {(x.colour, x.shape) for x in objs}
        c, s = (o.colour, o.shape) if rng.random() < 0.5 else (str(rng.choice(COLOURS)), str(rng.choice(SHAPES)))
        qs += [("How many shapes are there?", NUMBERS[n], S)]
        qs += [(f"Is there a {c} {s}?", "yes" if (c, s) in present else "no", S)]
    elif scene.kind == "motion":
        qs += [("What colour is the shape?", o.colour, S), ("What shape is it?", o.shape, S)]
        qs += [("Which way does the shape move?", o.direction, Tm), ("Does the shape change colour?", "no", Tm)]
    elif scene.kind == "change":
        qs += [("What shape is it?", o.shape, S), ("Does the shape change colour?", "yes", Tm)]
        qs += [("What colour is the shape at the start?", o.colour, Tm)]
        qs += [("What colour is the shape at the end?", str(o.new_colour), Tm)]
        qs += [("Does the shape move?", "no" if o.direction == "none" else "yes", Tm)]
    elif scene.kind == "appear":
        qs += [("Which shape appeared first?", f"the {o.shape}", Tm)]
        qs += [("Which shape appeared last?", f"the {objs[-1].shape}", Tm)]
        qs += [("How many shapes are there at the end?", NUMBERS[n], Tm)]
        qs += [(f"What colour is the {o.shape}?", o.colour, S)]
    elif scene.kind == "disappear":
        gone = next(b for b in objs if b.vanish is not None)
        qs += [("Which shape disappears?", f"the {gone.shape}", Tm)]
        qs += [("How many shapes are there at the start?", NUMBERS[n], Tm)]
        qs += [("How many shapes are there at the end?", NUMBERS[n - 1], Tm)]
        qs += [(f"What colour is the {o.shape}?", o.colour, S)]
    else:  # count
        moves = "no" if o.direction == "none" else "yes"
        if n == 1:
            qs += [("What colour is the shape?", o.colour, S), ("Does the shape move?", moves, Tm)]
        else:
            b = objs[int(rng.integers(n))]
            qs += [(f"What colour is the {b.shape}?", b.colour, S), ("Do the shapes move?", moves, Tm)]
        qs += [("How many shapes are there?", NUMBERS[n], S)]
        if o.direction != "none":
            qs += [(f"Which way do{'es' if n == 1 else ''} the shape{'' if n == 1 else 's'} move?", o.direction, Tm)]
    return qs


def _turns(token: str, pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    conv = []
    for i, (q, a) in enumerate(pairs):
        conv += [{"from": "human", "value": f"{token}\n{q}" if i == 0 else q}, {"from": "gpt", "value": a}]
    return conv


def build_sample(
    seed: int, split: str, index: int, out_dir: str | Path, num_frames: int = 8, size: int = 64
) -> tuple[dict, dict, Scene]:
    """Draw, render and save sample `index` of `split`; returns its (caption item, QA item, scene)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))
    scene = sample_scene(rng, heldout=split == "heldout", num_frames=num_frames, size=size)
    sid = f"{split}_{index:06d}"
    frames = render_frames(list(scene.objs), scene.num_frames, size, size / 8)
    if scene.is_video:
        media, rel, token = "video", f"videos/{sid}.mp4", "<video>"
        save_mp4(frames, Path(out_dir) / rel)
    else:
        media, rel, token = "image", f"images/{sid}.png", "<image>"
        save_png(frames[0], Path(out_dir) / rel)
    stage1 = {"id": sid, media: rel, "conversations": _turns(token, [(f"Describe the {media}.", caption(scene))])}
    qs = questions(scene, rng)
    chosen = [qs[i] for i in rng.permutation(len(qs))[: int(rng.integers(1, len(qs) + 1))]]
    stage2: dict = {"id": sid, media: rel, "conversations": _turns(token, [(q, a) for q, a, _ in chosen])}
    if len(chosen) == 1:
        stage2["question_type"] = chosen[0][2]
    else:
        stage2["question_types"] = [t for _, _, t in chosen]
    return stage1, stage2, scene


def _job(args: tuple) -> tuple[dict, dict]:
    s1, s2, _ = build_sample(*args)
    return s1, s2


def generate(out_dir: str | Path, seed: int = 0, num_train: int = 2000, num_heldout: int = 200, num_frames: int = 8,
             size: int = 64, workers: int = 1) -> dict[str, list[dict]]:
    """Write media plus stage1.json, stage2.json, heldout.json and heldout_captions.json under `out_dir`; returns
    the four lists."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = (("train", num_train), ("heldout", num_heldout))
    jobs = [(seed, split, i, str(out), num_frames, size) for split, n in counts for i in range(n)]
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(_job, jobs, chunksize=32)
    else:
        results = [_job(j) for j in jobs]
    data = {"stage1": [r[0] for r in results[:num_train]], "stage2": [r[1] for r in results[:num_train]],
            "heldout": [r[1] for r in results[num_train:]], "heldout_captions": [r[0] for r in results[num_train:]]}
    for name, items in data.items():
        (out / f"{name}.json").write_text(json.dumps(items, indent=1) + "\n")
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-heldout", type=int, default=200)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    t0 = time.perf_counter()
    data = generate(a.out, a.seed, a.num_train, a.num_heldout, a.num_frames, a.size, a.workers)
    nbytes = sum(f.stat().st_size for f in Path(a.out).rglob("*") if f.is_file())
    print(f"{len(data['stage1'])} train + {len(data['heldout'])} held-out samples in {a.out}: "
          f"{time.perf_counter() - t0:.1f} s, {nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
