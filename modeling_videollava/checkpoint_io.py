"""Reading and writing checkpoint folders for the converter: state dicts, configs, tokenizers, model folders."""

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_videollava import LanguageBindVideoLlavaConfig


logger = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}.")
    return json.loads(path.read_text())


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's `*.safetensors` shards, or else its `*.bin` shards (read with `weights_only=True`)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    files = [f for f in files if not f.name.startswith(("training_args", "optimizer", "scheduler", "rng_state"))]
    if not files:
        raise FileNotFoundError(f"No *.safetensors or *.bin weights in {folder}.")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        shard = load_file(file) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu", weights_only=True)
        overlap = set(shard) & set(state_dict)
        if overlap:
            raise ValueError(f"{file} repeats {len(overlap)} keys of earlier shards, e.g. {sorted(overlap)[:3]}.")
        state_dict.update(shard)
    logger.info("Read %d tensors from %d file(s) in %s", len(state_dict), len(files), folder)
    return state_dict


def _meta_model(config: LanguageBindVideoLlavaConfig):
    from .modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration

    with torch.device("meta"):
        return LanguageBindVideoLlavaForConditionalGeneration(config)


def expected_shapes(config: LanguageBindVideoLlavaConfig) -> dict[str, torch.Size]:
    """Every persistent tensor the model for `config` holds, with its shape (built on the meta device: no memory)."""
    return {k: v.shape for k, v in _meta_model(config).state_dict().items()}


def save_model_folder(
    config: LanguageBindVideoLlavaConfig, state_dict: dict[str, torch.Tensor], out: Path, max_shard_size: str, dtype: str = "keep"
) -> Path:
    """Write config, Hub custom code and sharded safetensors for `state_dict` without materialising a model."""
    if dtype != "keep":
        state_dict = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_dict.items()}
    floating = [v.dtype for v in state_dict.values() if v.is_floating_point()]
    config.dtype = max(set(floating), key=floating.count) if floating else None
    out.mkdir(parents=True, exist_ok=True)
    model = _meta_model(config)
    model.save_pretrained(out, state_dict={k: v.contiguous() for k, v in state_dict.items()}, max_shard_size=max_shard_size)
    return out


def copy_tokenizer(src: Path, out: Path, config: LanguageBindVideoLlavaConfig, add_tokens: bool) -> None:
    """Copy the tokenizer, adding `<image> <video> <pad>` if asked, and check their ids match the config."""
    if not any((src / name).is_file() for name in TOKENIZER_FILES):
        logger.warning("No tokenizer in %s: pass --tokenizer DIR, or copy one into %s yourself.", src, out)
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, padding_side="left")
    if add_tokens:
        missing = [t for t in ("<image>", "<video>") if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    ids = {"<image>": config.image_token_id, "<video>": config.video_token_id}
    found = {t: tokenizer.convert_tokens_to_ids(t) for t in ids}
    if found != ids:
        raise ValueError(f"Tokenizer ids {found} disagree with the config's {ids} ({src}).")
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"Tokenizer has {len(tokenizer)} tokens but the model only {config.text_config.vocab_size}.")
    tokenizer.save_pretrained(out)
