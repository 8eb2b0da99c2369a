"""LanguageBind-style pre-alignment of the image and video towers, at toy scale (issue 14).

Video-LLaVA's towers come from LanguageBind, trained in two contrastive stages that this module reproduces:

    stage A (image)  image tower + text encoder + visual / text projections + logit scale, symmetric InfoNCE on
                     image captions;
    stage B (video)  a video tower initialised from the aligned image tower (`video_tower_from_image_tower`: zero
                     temporal attention, so it starts equal to the image tower frame by frame) + its own visual
                     projection + logit scale, trained on video captions. LanguageBind keeps the text side frozen
                     (`video_stage_text="frozen"`); by default ("joint") our tiny text encoder, which stage A never
                     showed a motion word, keeps learning here too, held to the images by an image-caption loss
                     against the image tower frozen at its stage-A weights, so both towers end bound to one text side.

Each batch holds distinct captions only (repeated captions would be false negatives of each other). Both stages are
evaluated on held-out captions with `caption_recall_at_1` (a hit when the retrieved item has the query's caption),
text -> medium over the deduplicated captions and medium -> text over every medium, next to a random-tower floor
of the same config and the chance level of the rule. The outputs are LanguageBind checkpoint folders
(`LanguageBind_Image` / `LanguageBind_Video_merge` layout: `vision_model.*`, `text_model.*`,
`visual_projection.weight`, `text_projection.weight`, `logit_scale`), which `videollava convert --from
languagebind` reads:

    output/image/{config.json,model.safetensors}   output/video/{...}   output/report.json

Example:
    >>> report = align_towers(Path("d/stage1.json"), Path("d/heldout_captions.json"), Path("d"), tokenizer,
    ...                       dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
    ...                            image_size=64, patch_size=16), Path("towers"), AlignConfig())
    >>> report["video"]["aligned"]["text_to_video_r1"]
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from modeling_videollava.configuration_videollava import LanguageBindVisionConfig
from modeling_videollava.modeling_languagebind import LanguageBindVisionModel

from .align import caption_chance, caption_recall_at_1, symmetric_info_nce, video_tower_from_image_tower
from .alignment_data import CaptionSet, MediaPixels, encode_captions, read_captions


logger = logging.getLogger(__name__)

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature
LOGIT_SCALE_MAX = math.log(100.0)  # CLIP's clamp


@dataclass
class AlignConfig:
    """Alignment hyper-parameters. Defaults: the tiny default model's towers on the 2000-item shapes data, about
    8.5 min with one torch thread on a shared 2-core machine (`videollava align` sets `--threads 1`: at this size two
    threads on busy cores were many times slower; callers of `align_towers` should `torch.set_num_threads(1)`)."""

    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_max_positions: int = 32
    projection_dim: int = 64
    image_steps: int = 200
    # Stage B on the shapes data, direction picked among 4 captions differing only in that word (single-shape
    # clips): with the frozen text side 1200 steps reach 54 % on training clips, 32 % on held-out combinations
    # (text->video R@1 46 %); "joint" reaches 97 % / 47 % (R@1 79 %).
    video_steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    # Init std of the towers' weights when `tower_config` sets none (CLIP's default is 0.02). At 0.02 a random tiny
    # tower's pooled CLS is the same for every picture (mean pairwise cosine 0.99999 on the shapes images), and the
    # InfoNCE loss sits at log(batch) for the first ~100 steps; at 0.2 it is 0.85 and the loss falls from the start.
    tower_init_range: float = 0.2
    weight_decay: float = 0.0
    warmup_steps: int = 20
    # Fraction of each batch drawn as one-word-different captions (`distinct_caption_batch`). Off by default. With
    # the joint text side and 0.5: direction 95 % / 66 % (training / held-out clips, vs 97 % / 47 %), but text->video
    # R@1 73 % (vs 79 %), and the default model built on it: held-out QA 74.3 % (vs 76.4 %), direction 12 / 26 (vs 7).
    hard_negatives: float = 0.0
    # The text side in stage B. "frozen": LanguageBind's recipe, whose text encoder (OpenCLIP's) already knows every
    # word. Ours learnt only image captions in stage A, so it never saw a motion word: "A red square moves left / right
    # / up / down." embed at mean pairwise cosine 0.997 (colours: -0.07), and a video tower bound to it cannot learn
    # direction. "joint": stage B also trains the text encoder and text projection, on video captions and, against
    # the image tower frozen at its stage-A weights, on image captions, so both towers stay bound to the one text
    # encoder, which both checkpoints then hold.
    video_stage_text: str = "joint"
    seed: int = 0
    num_frames: int = 8
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.video_stage_text not in ("frozen", "joint"):
            raise ValueError(f"AlignConfig.video_stage_text must be 'frozen' or 'joint', got {self.video_stage_text!r}")


class TowerTextPair(nn.Module):
    """One LanguageBind checkpoint: a vision tower and a CLIP text encoder, projected into one space."""

    def __init__(self, vision: LanguageBindVisionModel, text: CLIPTextModel, projection_dim: int) -> None:
        super().__init__()
        self.vision_model = vision
        self.text_model = text
        self.visual_projection = nn.Linear(vision.config.hidden_size, projection_dim, bias=False)
        self.text_projection = nn.Linear(text.config.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def embed_media(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) or videos (B, T, 3, H, W) -> (B, P): projected post-LN CLS (frame mean for video)."""
        return self.visual_projection(self.vision_model(pixel_values).pooler_output)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) right-padded `<s> ... </s>` ids -> (B, P), pooled at `</s>` (the last real token)."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        eos = attention_mask.sum(1) - 1
        return self.text_projection(hidden[torch.arange(hidden.shape[0]), eos])

    def languagebind_state_dict(self) -> dict[str, torch.Tensor]:
        """Keys of `LanguageBind_Image` / `LanguageBind_Video_merge` (a `CLIPModel`'s: `vision_model.*`,
        `text_model.*`, projections, `logit_scale`). transformers 5 `CLIPTextModel` keys have no `text_model.`."""
        state = {f"vision_model.{k}": v for k, v in self.vision_model.state_dict().items()}
        state |= {k if k.startswith("text_model.") else f"text_model.{k}": v
                  for k, v in self.text_model.state_dict().items()}
        state |= {"visual_projection.weight": self.visual_projection.weight, "logit_scale": self.logit_scale.data,
                  "text_projection.weight": self.text_projection.weight}
        return {k: v.detach().contiguous().clone() for k, v in state.items()}

    def save_languagebind(self, folder: Path, model_type: str) -> None:
        """`config.json` (vision_config, text_config, projection_dim) + `model.safetensors`."""
        folder.mkdir(parents=True, exist_ok=True)
        config = {"model_type": model_type, "projection_dim": self.visual_projection.out_features,
                  "logit_scale_init_value": LOGIT_SCALE_INIT, "vision_config": self.vision_model.config.to_dict(),
                  "text_config": self.text_model.config.to_dict()}
        (folder / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        save_file(self.languagebind_state_dict(), folder / "model.safetensors", metadata={"format": "pt"})


def build_pair(tower_config: dict, config: AlignConfig, tokenizer, video: bool) -> TowerTextPair:
    """A seeded random pair: the image tower (num_frames=1), or a random video tower of the same size (the floor)."""
    vision = LanguageBindVisionConfig(**{"initializer_range": config.tower_init_range, **tower_config,
                                         "num_frames": config.num_frames if video else 1, "add_time_attn": video})
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
        intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=config.text_max_positions,
        projection_dim=config.projection_dim, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return TowerTextPair(LanguageBindVisionModel(vision), CLIPTextModel(text), config.projection_dim)


def distinct_caption_batch(captions: list[str], size: int, generator: torch.Generator,
                           neighbours: dict[str, list[int]] | None = None, hard: float = 0.0) -> list[int]:
    """Indices of up to `size` random items whose captions are pairwise different.

    With `neighbours` (`caption_neighbours`) and `hard` > 0, about that fraction of the batch are hard negatives:
    after each random item, one item whose caption differs from it in exactly one word ("moves up" / "moves left",
    "red" / "blue"), so the loss must tell those apart instead of the easy differences only."""
    seen, batch = set(), []
    hard_budget = int(size * hard)

    def take(i: int) -> bool:
        if captions[i] in seen:
            return False
        seen.add(captions[i])
        batch.append(i)
        return True

    for i in torch.randperm(len(captions), generator=generator).tolist():
        if len(batch) >= size:
            break
        if not take(i) or not neighbours or hard_budget <= 0 or len(batch) >= size:
            continue
        options = [j for j in neighbours.get(captions[i], []) if captions[j] not in seen]
        if options:
            take(options[int(torch.randint(len(options), (1,), generator=generator))])
            hard_budget -= 1
    return batch[:size]


def caption_neighbours(captions: list[str]) -> dict[str, list[int]]:
    """caption -> indices of the items whose caption differs from it in exactly one word (same length)."""
    by_pattern: dict[tuple, set[str]] = {}
    words = {c: c.split() for c in set(captions)}
    for c, w in words.items():
        for k in range(len(w)):
            by_pattern.setdefault((*w[:k], None, *w[k + 1:]), set()).add(c)
    items: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        items.setdefault(c, []).append(i)
    out: dict[str, list[int]] = {}
    for c, w in words.items():
        near = set().union(*(by_pattern[(*w[:k], None, *w[k + 1:])] for k in range(len(w)))) - {c}
        out[c] = [i for n in sorted(near) for i in items[n]]
    return out


@torch.no_grad()
def embed_in_chunks(embed: Callable[..., torch.Tensor], *inputs: torch.Tensor, size: int = 256) -> torch.Tensor:
    """`embed` over `size`-row slices of `inputs` (aligned on dim 0), concatenated: (N, ...) -> (N, P)."""
    return torch.cat([embed(*(x[i : i + size] for x in inputs)) for i in range(0, len(inputs[0]), size)])


def train_stage(name: str, loss_fn: Callable[[list[int]], torch.Tensor], params: list[nn.Parameter],
                logit_scale: nn.Parameter, captions: list[str], steps: int, config: AlignConfig) -> list[float]:
    """AdamW with linear warm-up and cosine decay over `steps` distinct-caption batches; returns the losses."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, min(config.warmup_steps, steps // 5))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / steps))
    )
    generator = torch.Generator().manual_seed(config.seed)
    neighbours = caption_neighbours(captions) if config.hard_negatives > 0 else None
    losses = []
    for step in range(steps):
        loss = loss_fn(distinct_caption_batch(captions, config.batch_size, generator, neighbours,
                                              config.hard_negatives))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            logger.info("align %s step %d/%d loss %.4f", name, step + 1, steps, losses[-1])
    return losses


@torch.no_grad()
def retrieval(pair: TowerTextPair, media: torch.Tensor, data: CaptionSet, tokenizer, config: AlignConfig,
              transform: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """Held-out R@1 both ways (see the module docstring); `media` are cached inputs, `transform` makes pixels."""
    pair.eval()
    unique = data.unique_captions
    ids, mask = encode_captions(tokenizer, unique, config.text_max_positions)
    text = pair.embed_text(ids, mask)
    vision = embed_in_chunks(lambda m: pair.embed_media(transform(m)), media, size=config.eval_batch_size)
    pair.train()
    kind = data.kind
    return {f"text_to_{kind}_r1": caption_recall_at_1(text, vision, unique, data.captions),
            f"{kind}_to_text_r1": caption_recall_at_1(vision, text, data.captions, unique)}


def chance(data: CaptionSet) -> dict[str, float]:
    unique = data.unique_captions
    return {f"text_to_{data.kind}_r1": caption_chance(unique, data.captions),
            f"{data.kind}_to_text_r1": caption_chance(data.captions, unique)}


def summary(losses: list[float]) -> dict[str, float]:
    tail = losses[-10:]
    return {"first": losses[0], "last": losses[-1], "last10_mean": sum(tail) / len(tail)} if losses else {}


def align_towers(train_json: Path, heldout_json: Path, media_root: Path, tokenizer, tower_config: dict,
                 output: Path, config: AlignConfig) -> dict:
    """Run stages A and B (module docstring), write `output/{image,video}/` and `output/report.json`.

    Args:
        train_json / heldout_json: stage-1 caption files (both need image and video captions).
        media_root: folder the media paths of both files are relative to.
        tokenizer: the LLM's tokenizer (its vocabulary becomes the text encoder's).
        tower_config: `LanguageBindVisionConfig` kwargs shared by both towers (size, image_size, patch_size).
        output: folder to write.
        config: `AlignConfig`.

    Returns:
        The report (also in `output/report.json`): held-out R@1 of the aligned towers, the random floor and chance,
        losses, seconds per stage, item counts.
    """
    t0 = time.perf_counter()
    train, heldout = read_captions(train_json, media_root), read_captions(heldout_json, media_root)
    pixels = MediaPixels(tower_config["image_size"], config.num_frames)
    splits = (("train", train), ("heldout", heldout))
    images = {name: pixels.images(s["image"].paths) for name, s in splits}  # processed once: (N, 3, S, S)
    frames = {name: torch.from_numpy(pixels.decode_videos(s["video"].paths)) for name, s in splits}  # uint8

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    def to_video(f: torch.Tensor) -> torch.Tensor:
        return pixels.transform_videos(f.numpy())

    seconds = {"data": time.perf_counter() - t0}
    logger.info("align: %d + %d train, %d + %d held-out images + videos, loaded in %.1f s", len(train["image"]),
                len(train["video"]), len(heldout["image"]), len(heldout["video"]), seconds["data"])

    torch.manual_seed(config.seed)
    pair = build_pair(tower_config, config, tokenizer, video=False)
    floor_video = build_pair(tower_config, config, tokenizer, video=True)
    report = {"image": {"random": retrieval(pair, images["heldout"], heldout["image"], tokenizer, config, identity),
                        "chance": chance(heldout["image"])},
              "video": {"random": retrieval(floor_video, frames["heldout"], heldout["video"], tokenizer, config,
                                            to_video),
                        "chance": chance(heldout["video"])}}
    del floor_video

    # Stage A: everything trains on image captions.
    t = time.perf_counter()
    ids, mask = encode_captions(tokenizer, train["image"].captions, config.text_max_positions)

    def a_loss(b: list[int]) -> torch.Tensor:
        return symmetric_info_nce(pair.embed_media(images["train"][b]), pair.embed_text(ids[b], mask[b]),
                                  pair.logit_scale)

    losses_a = train_stage("image", a_loss, list(pair.parameters()), pair.logit_scale, train["image"].captions,
                           config.image_steps, config)
    seconds["image"] = time.perf_counter() - t
    report["image"]["aligned"] = retrieval(pair, images["heldout"], heldout["image"], tokenizer, config, identity)

    # Stage B: a video tower from the image tower, against the text side of stage A (frozen, or "joint").
    t = time.perf_counter()
    joint = config.video_stage_text == "joint"
    # frozen: the text encoder is copied (the image checkpoint keeps its own); joint: shared with the image pair.
    text_model = pair.text_model if joint else copy.deepcopy(pair.text_model)
    video = TowerTextPair(video_tower_from_image_tower(pair.vision_model, config.num_frames), text_model,
                          config.projection_dim)
    video.visual_projection.load_state_dict(pair.visual_projection.state_dict())
    if joint:
        video.text_projection = pair.text_projection
    else:
        video.text_projection.load_state_dict(pair.text_projection.state_dict())
    video.logit_scale.data.copy_(pair.logit_scale.data)
    video.text_model.requires_grad_(joint)
    video.text_projection.requires_grad_(joint)
    report["video"]["from_image_tower"] = retrieval(video, frames["heldout"], heldout["video"], tokenizer, config,
                                                    to_video)
    video_ids, video_mask = encode_captions(tokenizer, train["video"].captions, config.text_max_positions)
    if joint:
        # the image side stays as stage A left it; only the shared text side learns
        for part in (pair.vision_model, pair.visual_projection):
            part.requires_grad_(False)
        pair.logit_scale.requires_grad_(False)
        image_emb = embed_in_chunks(pair.embed_media, images["train"])  # (N_img, P)
        image_generator = torch.Generator().manual_seed(config.seed + 1)
    else:
        video.text_model.eval()
        text = embed_in_chunks(video.embed_text, video_ids, video_mask)  # (N_vid, P)

    def b_loss(b: list[int]) -> torch.Tensor:
        media = video.embed_media(to_video(frames["train"][b]))
        if not joint:
            return symmetric_info_nce(media, text[b], video.logit_scale)
        loss = symmetric_info_nce(media, video.embed_text(video_ids[b], video_mask[b]), video.logit_scale)
        i = distinct_caption_batch(train["image"].captions, config.batch_size, image_generator)
        return loss + symmetric_info_nce(image_emb[i], pair.embed_text(ids[i], mask[i]), pair.logit_scale)

    trainable = [p for p in video.parameters() if p.requires_grad]
    losses_b = train_stage("video", b_loss, trainable, video.logit_scale, train["video"].captions,
                           config.video_steps, config)
    seconds["video"] = time.perf_counter() - t
    report["video"]["aligned"] = retrieval(video, frames["heldout"], heldout["video"], tokenizer, config, to_video)
    video.save_languagebind(output / "video", "LanguageBindVideo")
    if joint:  # the image checkpoint gets the text side both towers are now bound to; "aligned" is what is saved
        report["image"]["after_image_stage"] = report["image"]["aligned"]
        report["image"]["aligned"] = retrieval(pair, images["heldout"], heldout["image"], tokenizer, config, identity)
    pair.save_languagebind(output / "image", "LanguageBindImage")  # frozen: unchanged since stage A

    seconds["total"] = time.perf_counter() - t0
    report |= {
        "loss": {"image": summary(losses_a), "video": summary(losses_b)},
        "seconds": seconds,
        "items": {"train_images": len(train["image"]), "train_videos": len(train["video"]),
                  "heldout_images": len(heldout["image"]), "heldout_videos": len(heldout["video"]),
                  "heldout_image_captions": len(heldout["image"].unique_captions),
                  "heldout_video_captions": len(heldout["video"].unique_captions)},
        "r1_definition": "a hit when the retrieved item's caption equals the query's; text->medium queries are the "
                         "distinct held-out captions, medium->text queries every held-out medium; chance = the same "
                         "rule under a uniformly random pick; random = seeded random towers and text encoder",
        "config": asdict(config), "tower_config": tower_config,
        "inputs": {"train": str(train_json), "heldout": str(heldout_json), "media_root": str(media_root)},
    }
    (output / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
