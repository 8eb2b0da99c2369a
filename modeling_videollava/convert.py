"""Convert checkpoints into (and out of) this package's layout, strictly: no weight is dropped or invented silently.

Sources (`--from`):
    original      `LanguageBind/Video-LLaVA-7B` (`model.mm_projector.*`, `model.image_tower.image_tower.*`,
                  `model.video_tower.video_tower.*` with the temporal weights; SPEC §3.3)
    hf            `LanguageBind/Video-LLaVA-7B-hf` / transformers' `VideoLlavaForConditionalGeneration` (no temporal
                  weights: the output turns `add_time_attn` off and says so)
    languagebind  towers from `LanguageBind_Image` + `LanguageBind_Video_merge` (`vision_model.*`) and an LLM: a
                  fresh model for stage-1 training (the projector is newly initialised)
`--to hf` exports one of our folders (without temporal attention) to the built-in class's layout.

Run as:
    videollava convert --from original --input Video-LLaVA-7B/ --output converted/ [--tokenizer DIR]
    videollava convert --from languagebind --image-tower LanguageBind_Image/ --video-tower \
        LanguageBind_Video_merge/ --input vicuna-7b-v1.5/ --output stage0/
    videollava convert --to hf --input converted-no-temporal/ --output hf/
"""

import argparse
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint_io import (
    EMBED,
    HEAD,
    ConversionError,
    copy_tokenizer,
    declares_tie,
    expected_shapes,
    read_config,
    read_state_dict,
    save_model_folder,
    settle_tied_head,
    staged_folder,
    verify_written,
)
from .configuration_videollava import LanguageBindVisionConfig, LanguageBindVideoLlavaConfig


logger = logging.getLogger(__name__)
Rules = list[tuple[str, str]]

# Ordered (pattern, replacement) pairs; the first matching pattern renames a key, "" drops it.
ORIGINAL_RULES: Rules = [
    (r".*\.rotary_emb\.inv_freq$|.*embeddings\.position_ids$", ""),
    (r"^model\.image_tower\.image_tower\.(.+)$", r"model.image_tower.\1"),
    (r"^model\.video_tower\.video_tower\.(.+)$", r"model.video_tower.\1"),
    (r"^model\.mm_projector\.0\.(.+)$", r"model.multi_modal_projector.linear_1.\1"),
    (r"^model\.mm_projector\.2\.(.+)$", r"model.multi_modal_projector.linear_2.\1"),
    (r"^model\.((?:embed_tokens|layers|norm)\..+)$", r"model.language_model.\1"),
    (r"^(lm_head\.weight)$", r"\1"),
]
HF_RULES: Rules = [
    (r".*\.rotary_emb\.inv_freq$|.*embeddings\.position_ids$", ""),
    (r"^(?:model\.)?(image_tower|video_tower)\.(?:vision_model\.)?(.+)$", r"model.\1.\2"),
    (r"^(?:model\.)?multi_modal_projector\.(.+)$", r"model.multi_modal_projector.\1"),
    (r"^language_model\.model\.(.+)$", r"model.language_model.\1"),
    (r"^model\.language_model\.(.+)$", r"model.language_model.\1"),
    (r"^(?:language_model\.)?(lm_head\.weight)$", r"\1"),
]
TOWER_RULES: Rules = [
    (r"^(?:text_model|visual_projection|text_projection|logit_scale)(?:\..+)?$|.*position_ids$", ""),
    (r"^vision_model\.(.+)$", r"\1"),
]
LLM_RULES: Rules = [
    (r".*\.rotary_emb\.inv_freq$", ""),
    (r"^model\.(.+)$", r"model.language_model.\1"),
    (r"^(lm_head\.weight)$", r"\1"),
]
TO_HF_RULES: Rules = [
    (r"^model\.(image_tower|video_tower)\.(.+)$", r"\1.vision_model.\2"),
    (r"^model\.multi_modal_projector\.(.+)$", r"multi_modal_projector.\1"),
    (r"^model\.language_model\.(.+)$", r"language_model.model.\1"),
    (r"^lm_head\.weight$", r"language_model.lm_head.weight"),
]
MEDIA_TOKENS = ("<image>", "<video>", "<pad>")


def rename(state_dict: dict[str, torch.Tensor], rules: Rules, source: str) -> dict[str, torch.Tensor]:
    """Apply the first matching rule to every key; keys no rule matches are an error listing them all."""
    out, unmatched = {}, []
    for key, tensor in state_dict.items():
        for pattern, replacement in rules:
            if re.match(pattern, key):
                if replacement:
                    out[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ConversionError(f"{len(unmatched)} keys of {source} have no place in the model: {_listing(unmatched)}")
    return out


def check_strict(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: str) -> None:
    """Raise unless `state_dict` has exactly the expected keys with the expected shapes."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(shape)}"
        for k, shape in expected.items()
        if k in state_dict and state_dict[k].shape != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_listing(wrong)}")
    if problems:
        raise ConversionError(f"{source} does not match the model; " + "; ".join(problems))


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def pad_vocab(state_dict: dict[str, torch.Tensor], vocab_size: int) -> None:
    """Grow `embed_tokens` / `lm_head` to `vocab_size` rows, new rows = mean of the trained rows (as HF-conv)."""
    for key in (EMBED, HEAD):
        weight = state_dict.get(key)
        if weight is not None and weight.shape[0] < vocab_size:
            extra = weight.float().mean(0, keepdim=True).expand(vocab_size - weight.shape[0], -1).to(weight.dtype)
            state_dict[key] = torch.cat([weight, extra])


def with_media_tokens(llm: dict) -> dict:
    """LanguageBindVideoLlavaConfig kwargs for an LLM config.json (original / Vicuna): `<image> <video> <pad>` are appended
    after the LLM's vocabulary (32000, 32001, 32002 for Vicuna, as the `-hf` port) and rows padded to a multiple
    of 64 (32064)."""
    drop = {"architectures", "auto_map", "_name_or_path", "transformers_version", "model_type"}
    text = {k: v for k, v in llm.items() if not k.startswith(("mm_", "tokenizer_")) and k not in drop}
    base = llm.get("vocab_size", 32000)
    text["model_type"] = "llama" if llm.get("model_type") in (None, "llava", "llava_llama") else llm["model_type"]
    text.update(vocab_size=-(-(base + len(MEDIA_TOKENS)) // 64) * 64, pad_token_id=base + 2)
    return dict(text_config=text, image_token_index=base, video_token_index=base + 1)


def convert_original(args: argparse.Namespace) -> tuple[LanguageBindVideoLlavaConfig, dict[str, torch.Tensor]]:
    raw = read_config(args.input)
    state_dict = rename(read_state_dict(args.input), ORIGINAL_RULES, f"{args.input} (original layout)")
    tower = dict(hidden_act=args.tower_hidden_act)
    config = LanguageBindVideoLlavaConfig(
        image_config=LanguageBindVisionConfig(num_frames=1, **tower).to_dict(),
        video_config=LanguageBindVisionConfig(num_frames=args.num_frames, add_time_attn=True, **tower).to_dict(),
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        video_feature_select=args.video_feature_select,
        **with_media_tokens(raw),
    )
    pad_vocab(state_dict, config.text_config.vocab_size)
    settle_tied_head(config, state_dict, declares_tie(raw), str(args.input))
    return config, state_dict


def convert_hf(args: argparse.Namespace) -> tuple[LanguageBindVideoLlavaConfig, dict[str, torch.Tensor]]:
    raw = read_config(args.input)
    if not isinstance(raw.get("vision_config"), dict) or not isinstance(raw.get("text_config"), dict):
        raise ConversionError(f"{Path(args.input) / 'config.json'}: no vision_config / text_config: not the hf layout")
    vision = {k: v for k, v in raw["vision_config"].items() if k not in ("model_type", "architectures")}
    vision["hidden_act"] = args.tower_hidden_act or vision.get("hidden_act", "quick_gelu")
    logger.warning(
        "The hf layout has no temporal attention weights: the video tower is converted with add_time_attn=False "
        "(a plain CLIP tower per frame). Convert from the original layout to keep LanguageBind's temporal attention."
    )
    config = LanguageBindVideoLlavaConfig(
        image_config=dict(vision, num_frames=1),
        video_config=dict(vision, num_frames=args.num_frames, add_time_attn=False),
        text_config=raw["text_config"],
        image_token_index=raw.get("image_token_index", 32000),
        video_token_index=raw.get("video_token_index", 32001),
        vision_feature_layer=raw.get("vision_feature_layer", -2),
        image_feature_select="patch" if raw.get("vision_feature_select_strategy", "default") == "default" else "cls_patch",
        video_feature_select="cls_patch",
        projector_hidden_act=raw.get("projector_hidden_act", "gelu"),
        multimodal_projector_bias=raw.get("multimodal_projector_bias", True),
    )
    state_dict = rename(read_state_dict(args.input), HF_RULES, f"{args.input} (hf layout)")
    settle_tied_head(config, state_dict, declares_tie(raw), str(args.input))
    return config, state_dict


def _tower_config(path: Path, **overrides) -> dict:
    vision = read_config(path).get("vision_config", {})
    keep = set(LanguageBindVisionConfig().to_dict()) - {"model_type", "architectures", "transformers_version"}
    return {**{k: v for k, v in vision.items() if k in keep}, **overrides}


def convert_languagebind(args: argparse.Namespace) -> tuple[LanguageBindVideoLlavaConfig, dict[str, torch.Tensor]]:
    if not (args.image_tower and args.video_tower):
        raise ConversionError("--from languagebind needs --image-tower DIR and --video-tower DIR (and --input LLM).")
    image = _tower_config(Path(args.image_tower), num_frames=1, add_time_attn=False)
    video = _tower_config(Path(args.video_tower), add_time_attn=True)
    video.setdefault("num_frames", args.num_frames)
    if args.tower_hidden_act:
        image["hidden_act"] = video["hidden_act"] = args.tower_hidden_act
    llm = read_config(args.input)
    config = LanguageBindVideoLlavaConfig(
        image_config=image,
        video_config=video,
        video_feature_select=args.video_feature_select,
        **with_media_tokens(llm),
    )
    state_dict = rename(read_state_dict(args.input), LLM_RULES, f"{args.input} (LLM)")
    for name, path in (("image_tower", args.image_tower), ("video_tower", args.video_tower)):
        tower = rename(read_state_dict(path), TOWER_RULES, f"{path} (LanguageBind)")
        state_dict.update({f"model.{name}.{k}": v for k, v in tower.items()})
    pad_vocab(state_dict, config.text_config.vocab_size)
    settle_tied_head(config, state_dict, declares_tie(llm), str(args.input))
    fresh = _fresh_projector(config)
    state_dict.update(fresh)
    logger.info("Initialised the projector (%d tensors) for stage-1 training.", len(fresh))
    return config, state_dict


def _fresh_projector(config: LanguageBindVideoLlavaConfig) -> dict[str, torch.Tensor]:
    from .modeling_videollava import LanguageBindVideoLlavaMultiModalProjector

    projector = LanguageBindVideoLlavaMultiModalProjector(config)
    return {f"model.multi_modal_projector.{k}": v for k, v in projector.state_dict().items()}


def export_hf(args: argparse.Namespace, out: Path) -> None:
    """Our folder -> the layout of transformers' built-in `VideoLlavaForConditionalGeneration` (`-hf`), in `out`."""
    config = LanguageBindVideoLlavaConfig.from_pretrained(args.input)
    if config.video_config.add_time_attn:
        raise ConversionError(
            f"{args.input} has temporal attention in its video tower; the built-in class has no place for those "
            "weights. Export only models converted with add_time_attn=False."
        )
    tower_only = ("num_frames", "add_time_attn", "interpolate_temporal_embedding")
    vision = {k: v for k, v in config.image_config.to_dict().items() if k not in tower_only}
    if {k: v for k, v in config.video_config.to_dict().items() if k not in tower_only} != vision:
        raise ConversionError("The built-in class shares one vision config; the image and video towers differ.")
    if config.video_feature_select != "cls_patch":
        raise ConversionError("The built-in class keeps CLS in video frames; this model uses 'patch' video features.")
    state_dict = rename(read_state_dict(args.input), TO_HF_RULES, f"{args.input} (ours)")
    hf = dict(
        architectures=["VideoLlavaForConditionalGeneration"],
        model_type="video_llava",
        vision_config={**vision, "model_type": "clip_vision_model"},
        text_config=config.text_config.to_dict(),
        tie_word_embeddings=config.tie_word_embeddings,
        image_token_index=config.image_token_id,
        video_token_index=config.video_token_id,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy="default" if config.image_feature_select == "patch" else "full",
        image_seq_length=config.image_seq_length,
        video_seq_length=config.video_seq_length,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.multimodal_projector_bias,
    )
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict(state_dict, out, max_shard_size=args.max_shard_size)
    verify_written(out, {k: v.shape for k, v in state_dict.items()}, f"{args.input} (--to hf)")
    (out / "config.json").write_text(json.dumps(hf, indent=2, default=str))
    copy_tokenizer(Path(args.input), out, config, add_tokens=False)
    logger.info("Wrote %d tensors in the built-in VideoLlava layout to %s", len(state_dict), out)


CONVERTERS = {"original": convert_original, "hf": convert_hf, "languagebind": convert_languagebind}


def convert(args: argparse.Namespace, finish: Callable[[Path], None] | None = None) -> Path:
    """Run one conversion; returns the output folder.

    Everything is written to a temporary folder next to `--output` (then `finish(folder)`, if given, may add to
    it) and moved into place only when complete: a failed conversion leaves no partial output.
    """
    out = Path(args.output)
    with staged_folder(out) as staging:
        if args.to == "hf":
            export_hf(args, staging)
        else:
            config, state_dict = CONVERTERS[args.source](args)
            check_strict(state_dict, expected_shapes(config), f"{args.input} (--from {args.source})")
            save_model_folder(config, state_dict, staging, args.max_shard_size, args.dtype)
            copy_tokenizer(Path(args.tokenizer or args.input), staging, config, add_tokens=args.source != "hf")
            tied = " (lm_head tied to embed_tokens)" if config.tie_word_embeddings else ""
            logger.info("Converted %d tensors strictly (0 missing, 0 unexpected%s), all read back", len(state_dict),
                        tied)
        if finish is not None:
            finish(staging)
    logger.info("Wrote %s", out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=sorted(CONVERTERS), help="input layout")
    parser.add_argument("--to", choices=["ours", "hf"], default="ours", help="output layout (default: ours)")
    parser.add_argument("--input", required=True, help="checkpoint folder (for languagebind: the LLM folder)")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--image-tower", help="LanguageBind_Image folder (--from languagebind)")
    parser.add_argument("--video-tower", help="LanguageBind_Video_merge folder (--from languagebind)")
    parser.add_argument("--tokenizer", help="tokenizer folder, if not in --input")
    parser.add_argument("--num-frames", type=int, default=8, help="frames the video tower was trained on")
    parser.add_argument(
        "--tower-hidden-act", default=None, help="tower activation (default: gelu; hf: what its config says)"
    )
    parser.add_argument("--video-feature-select", choices=["cls_patch", "patch"], default="cls_patch")
    parser.add_argument("--dtype", choices=["keep", "float32", "float16", "bfloat16"], default="keep")
    parser.add_argument("--max-shard-size", default="5GB")


def run(args: argparse.Namespace, finish: Callable[[Path], None] | None = None) -> int:
    """`videollava convert`: 0 on success, 1 with a one-line error (nothing written) on failure."""
    if args.to == "ours" and args.source is None:
        raise SystemExit("videollava convert: pass --from {original,hf,languagebind} (or --to hf)")
    if args.source == "original" and args.tower_hidden_act is None:
        args.tower_hidden_act = "gelu"
    try:
        convert(args, finish)
    except (ConversionError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 1
    return 0
