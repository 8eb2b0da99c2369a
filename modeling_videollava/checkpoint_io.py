"""Reading and writing checkpoint folders for the converter: state dicts, configs, tokenizers, model folders."""

import json
import logging
import os
import shutil
import struct
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .configuration_videollava import LanguageBindVideoLlavaConfig


logger = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HEAD, EMBED = "lm_head.weight", "model.language_model.embed_tokens.weight"


class ConversionError(ValueError):
    """A checkpoint cannot be read or does not map one-to-one onto the target layout; the message names the file
    or lists the keys."""


def read_config(folder: str | Path) -> dict:
    """`folder/config.json` as a dict; a file that is not a JSON object raises `ConversionError` naming it."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}.")
    try:
        config = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ConversionError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def safetensors_problem(file: str | os.PathLike) -> str | None:
    """Why `file` is not a complete safetensors file (bad header, truncated data), or None; reads only the header."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated safetensors file ({size} bytes, no header)"
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            return f"truncated safetensors file: {size} bytes, but its header alone needs {8 + header_len}"
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        return f"truncated safetensors file: {size} of {needed} bytes (cut at byte {size})"
    return None


def torch_zip_problem(file: str | os.PathLike) -> str | None:
    """Why a `torch.save` zip file (`.bin` / `.pt`) is unreadable (e.g. truncated: no central directory), or None."""
    try:
        with zipfile.ZipFile(file) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        return f"truncated or damaged PyTorch file ({err}; {os.path.getsize(file)} bytes)"
    return None


def _load_shard(file: Path) -> dict[str, torch.Tensor]:
    """One weights file; an unreadable one raises `ConversionError` naming it (pickles: `weights_only=True`)."""
    problem = safetensors_problem(file) if file.suffix == ".safetensors" else None
    if problem:
        raise ConversionError(f"{file}: {problem}")
    try:
        if file.suffix == ".safetensors":
            return load_file(file)
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- safetensors, zipfile, pickle and torch raise many types
        reason = (torch_zip_problem(file) if file.suffix != ".safetensors" else None) or f"{type(err).__name__}: {err}"
        raise ConversionError(f"{file}: cannot read weights: {reason.splitlines()[0]}") from None


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's `*.safetensors` shards, or else its `*.bin` shards (read with `weights_only=True`)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    files = [f for f in files if not f.name.startswith(("training_args", "optimizer", "scheduler", "rng_state"))]
    if not files:
        raise FileNotFoundError(f"No *.safetensors or *.bin weights in {folder}.")
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        shard = _load_shard(file)
        if not isinstance(shard, dict) or not all(isinstance(v, torch.Tensor) for v in shard.values()):
            raise ConversionError(f"{file}: holds no state dict of tensors ({type(shard).__name__})")
        overlap = set(shard) & set(state_dict)
        if overlap:
            raise ConversionError(f"{file} repeats {len(overlap)} keys of earlier shards, e.g. {sorted(overlap)[:3]}.")
        state_dict.update(shard)
    logger.info("Read %d tensors from %d file(s) in %s", len(state_dict), len(files), folder)
    return state_dict


def _meta_model(config: LanguageBindVideoLlavaConfig):
    from .modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration

    with torch.device("meta"):
        return LanguageBindVideoLlavaForConditionalGeneration(config)


def tied_weights(config: LanguageBindVideoLlavaConfig) -> dict[str, str]:
    """`{tied key: the key it shares}` for `config`: `lm_head.weight -> embed_tokens` when `tie_word_embeddings`."""
    return dict(_meta_model(config).get_expanded_tied_weights_keys(all_submodels=True))


def expected_shapes(config: LanguageBindVideoLlavaConfig) -> dict[str, torch.Size]:
    """Every tensor a saved folder for `config` holds, with its shape (tied copies are not stored; the model re-ties
    them on load). Built on the meta device: no memory."""
    model = _meta_model(config)
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)
    return {k: v.shape for k, v in model.state_dict().items() if k not in tied}


def written_shapes(folder: str | Path) -> dict[str, torch.Size]:
    """Keys and shapes stored in a folder's `*.safetensors` files, read back from their headers."""
    shapes: dict[str, torch.Size] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            raise ConversionError(f"{file}: {problem}")
        with safe_open(str(file), "pt") as f:
            shapes.update({k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()})
    return shapes


def verify_written(folder: str | Path, expected: dict[str, torch.Size], source: str) -> None:
    """Read back what was written to `folder` and raise `ConversionError` unless it is exactly `expected`."""
    written = written_shapes(folder)
    missing = sorted(set(expected) - set(written))
    unexpected = sorted(set(written) - set(expected))
    wrong = sorted(f"{k} {tuple(written[k])} != {tuple(v)}" for k, v in expected.items() if k in written
                   and written[k] != v)
    if missing or unexpected or wrong:
        raise ConversionError(
            f"writing {source} to {folder} lost or changed tensors: missing {missing[:20]}, unexpected "
            f"{unexpected[:20]}, wrong shape {wrong[:20]}"
        )
    logger.info("Read back %d tensors from %s: all written", len(written), folder)


def unshare(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no storage shared between keys (a `.bin` saved from a tied model shares it, and
    `save_pretrained` would silently drop one of them)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state_dict.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor.contiguous()
        seen.add(pointer)
    return out


def declares_tie(config: dict) -> bool:
    """Whether a source config.json ties the LM head to the input embeddings (top level or its text_config)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return config.get("tie_word_embeddings") is True or text.get("tie_word_embeddings") is True


def settle_tied_head(
    config: LanguageBindVideoLlavaConfig, state_dict: dict[str, torch.Tensor], declared: bool, source: str
) -> None:
    """Record in `config` whether `lm_head` is tied to `embed_tokens`, so that no tensor is lost either way.

    A source that declares the tie and stores no `lm_head` (what `save_pretrained` writes), or one equal to the
    embeddings (a `.bin` whose two keys share storage), is converted tied: the model re-ties on load. An `lm_head`
    that differs from the embeddings is kept as its own tensor (untied), whatever the source declares.
    """
    head, embed = state_dict.get(HEAD), state_dict.get(EMBED)
    tied = False
    if declared and embed is not None:
        if head is None:
            tied = True
        elif head.shape == embed.shape and torch.equal(head, embed):
            tied = True
            del state_dict[HEAD]
        else:
            logger.warning("%s declares tie_word_embeddings but its lm_head differs from embed_tokens: both kept, "
                           "untied", source)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = tied
    if tied:
        logger.info("%s: lm_head is tied to embed_tokens; written once, with tie_word_embeddings=True", source)


def save_model_folder(
    config: LanguageBindVideoLlavaConfig,
    state_dict: dict[str, torch.Tensor],
    out: Path,
    max_shard_size: str,
    dtype: str = "keep",
) -> Path:
    """Write config, Hub custom code and sharded safetensors for `state_dict` without materialising a model, then
    read the written keys back and check them against the model's expected set."""
    if dtype != "keep":
        state_dict = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_dict.items()}
    floating = [v.dtype for v in state_dict.values() if v.is_floating_point()]
    config.dtype = max(set(floating), key=floating.count) if floating else None
    out.mkdir(parents=True, exist_ok=True)
    model = _meta_model(config)
    model.save_pretrained(out, state_dict=unshare(state_dict), max_shard_size=max_shard_size)
    verify_written(out, {k: v.shape for k, v in state_dict.items()}, "the converted model")
    return out


@contextmanager
def staged_folder(out: str | Path):
    """Yield an empty folder next to `out` to write into; when the block succeeds it is moved into place as `out`
    (an existing model folder there is replaced), when it fails it is removed, so `out` is never left half-written.

    Raises:
        ConversionError: `out` is a file, or a non-empty folder that is not a model folder (no config.json).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise ConversionError(f"{out} exists and is not a model folder; choose a new or empty output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        raise ConversionError(f"Tokenizer ids {found} disagree with the config's {ids} ({src}).")
    if len(tokenizer) > config.text_config.vocab_size:
        raise ConversionError(
            f"Tokenizer has {len(tokenizer)} tokens but the model only {config.text_config.vocab_size} ({src})."
        )
    tokenizer.save_pretrained(out)
