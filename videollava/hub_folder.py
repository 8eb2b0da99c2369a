"""Complete Hub folders: every model folder this package writes ships the Hub code files (byte-identical to the
installed package's sources) and an `auto_map` entry for every Auto class that applies, so that it loads with
`trust_remote_code=True` on a machine where this package is not installed.

Writers call `complete_hub_folder(folder)` after `save_pretrained`: `videollava convert`, `videollava train` (full
fine-tune, a LoRA run's `merged/`), `videollava merge-lora`, and the default model's `--install`. It copies missing
or stale code files, adds missing `auto_map` entries, then runs `check_hub_folder` and raises on any problem left
(e.g. an `architectures[0]` that names a class of `transformers`, which name-based loaders would pick instead).

Run as:
    python -m videollava.hub_folder DIR             # add / refresh the code files and auto_map entries
    python -m videollava.hub_folder --check DIR     # list what is missing or stale; exit status 1 if anything is
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import shutil
import sys
from pathlib import Path


logger = logging.getLogger(__name__)
MODEL_TYPE = "videollava_languagebind"


class HubFolderError(ValueError):
    """A written folder is not a complete Hub folder; the message lists every problem."""


def code_files() -> dict[str, Path]:
    """Hub file name -> this package's source: the model and processor entry modules and every sibling they import
    (followed the way transformers follows them when it loads remote code)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    import modeling_videollava.modeling_videollava as modeling
    import processing.processing_videollava as processing

    files: dict[str, Path] = {}
    for entry in (modeling.__file__, processing.__file__):
        for path in map(Path, [entry, *get_relative_import_files(entry)]):
            if files.setdefault(path.name, path) != path:
                raise HubFolderError(f"two Hub code files are both named {path.name}: {files[path.name]}, {path}")
    return files


def model_auto_map() -> dict[str, str]:
    """config.json's `auto_map`: AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM."""
    from modeling_videollava.configuration_videollava import AUTO_MAP

    return dict(AUTO_MAP)


def processor_auto_map() -> dict[str, str]:
    """The `auto_map` of processor_config.json's nested `image_processor` (AutoImageProcessor reads it there) and,
    its AutoProcessor entry alone, of processor_config.json and tokenizer_config.json: as `save_pretrained` writes."""
    from processing import LanguageBindImageProcessor, LanguageBindVideoLlavaProcessor

    return {"AutoImageProcessor": f"image_processing_videollava.{LanguageBindImageProcessor.__name__}",
            "AutoProcessor": f"processing_videollava.{LanguageBindVideoLlavaProcessor.__name__}"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_if_changed(path: Path, before: dict, after: dict) -> None:
    if after != before:  # same layout as transformers' own writers (indent 2, sorted keys)
        path.write_text(json.dumps(after, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _with_auto_map(data: dict, entries: dict[str, str]) -> dict:
    return {**data, "auto_map": {**(data.get("auto_map") or {}), **entries}}


def complete_hub_folder(folder: str | Path, processor: bool | None = True) -> Path:
    """Copy missing or stale code files into `folder`, add missing `auto_map` entries to its config.json,
    processor_config.json (and its nested image processor) and tokenizer_config.json, then check it; raises
    `HubFolderError` listing whatever is still wrong. `processor=False`: a folder written without a tokenizer;
    `None`: check the processor if the folder has one."""
    folder = Path(folder)
    if processor is None:
        processor = (folder / "processor_config.json").is_file()
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise HubFolderError(f"{folder} has no config.json: not a model folder")
    for name, source in code_files().items():
        target = folder / name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    config = _read(config_path)
    _write_if_changed(config_path, config, _with_auto_map(config, model_auto_map()))
    entries = processor_auto_map()
    top = {"AutoProcessor": entries["AutoProcessor"]}
    if processor and (folder / "processor_config.json").is_file():
        path = folder / "processor_config.json"
        data = _read(path)
        updated = _with_auto_map(data, top)
        if isinstance(data.get("image_processor"), dict):
            updated["image_processor"] = _with_auto_map(data["image_processor"], entries)
        _write_if_changed(path, data, updated)
    if processor and (folder / "tokenizer_config.json").is_file():
        path = folder / "tokenizer_config.json"
        data = _read(path)
        _write_if_changed(path, data, _with_auto_map(data, top))
    problems = check_hub_folder(folder, processor=processor)
    if problems:
        raise HubFolderError(f"{folder} is not a complete Hub folder: " + "; ".join(problems))
    logger.info("%s is a complete Hub folder (%d code files)", folder, len(code_files()))
    return folder


def _classes_in(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)}


def _check_auto_map(folder: Path, file: str, auto_map: dict, expected: dict[str, str]) -> list[str]:
    problems = []
    for auto_class, target in expected.items():
        if auto_map.get(auto_class) != target:
            problems.append(f"{file}: auto_map[{auto_class!r}] is {auto_map.get(auto_class)!r}, not {target!r}")
    for auto_class, target in auto_map.items():
        module, _, name = str(target).rpartition(".")
        code = folder / f"{module}.py"
        if "--" in module:  # code in another repo
            continue
        if code.is_file() and name not in _classes_in(code):
            problems.append(f"{file}: auto_map[{auto_class!r}] = {target!r}, but {code.name} does not define {name}")
        elif not code.is_file() and code.name not in code_files():  # our own files are reported as missing
            problems.append(f"{file}: auto_map[{auto_class!r}] = {target!r}, but there is no {code.name}")
    return problems


def check_hub_folder(folder: str | Path, processor: bool = True) -> list[str]:
    """Every way `folder` falls short of a complete Hub folder of this package (an empty list if none)."""
    import transformers

    folder = Path(folder)
    config = _read(folder / "config.json")
    if not config:
        return [f"{folder} has no config.json"]
    problems = []
    if config.get("model_type") != MODEL_TYPE:
        problems.append(f"config.json: model_type is {config.get('model_type')!r}, not {MODEL_TYPE!r}")
    architectures = config.get("architectures") or []
    if not architectures:
        problems.append("config.json: no architectures")
    elif getattr(transformers, architectures[0], None) is not None:
        problems.append(f"config.json: architectures[0] {architectures[0]!r} names a class of transformers: "
                        "name-based loaders would load the built-in class instead of this code")
    for name, source in code_files().items():
        target = folder / name
        if not target.is_file():
            problems.append(f"missing code file {name}")
        elif target.read_bytes() != source.read_bytes():
            problems.append(f"{name} differs from the package's {source}")
    problems += _check_auto_map(folder, "config.json", config.get("auto_map") or {}, model_auto_map())
    if not processor:
        return problems
    data = _read(folder / "processor_config.json")
    if not data:
        return problems + ["no processor_config.json: AutoProcessor cannot load this folder"]
    entries = processor_auto_map()
    top = {"AutoProcessor": entries["AutoProcessor"]}
    problems += _check_auto_map(folder, "processor_config.json", data.get("auto_map") or {}, top)
    nested = data.get("image_processor") or {}
    problems += _check_auto_map(folder, "processor_config.json image_processor", nested.get("auto_map") or {}, entries)
    tokenizer = _read(folder / "tokenizer_config.json")
    if not tokenizer:
        return problems + ["no tokenizer_config.json"]
    problems += _check_auto_map(folder, "tokenizer_config.json", tokenizer.get("auto_map") or {}, top)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videollava.hub_folder", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true", help="only report problems (exit status 1 if any)")
    parser.add_argument("--no-processor", action="store_true", help="the folder has no tokenizer / processor")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.check:
            problems = check_hub_folder(args.folder, processor=not args.no_processor)
            for problem in problems:
                logger.error("%s", problem)
            return int(bool(problems))
        complete_hub_folder(args.folder, processor=not args.no_processor)
    except HubFolderError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
