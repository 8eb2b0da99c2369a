"""Model card for a trained Video-LLaVA folder: Hub metadata, a `trust_remote_code=True` usage snippet and the
training settings (ECOSYSTEM §6)."""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import ModelCard, ModelCardData


USAGE = '''```python
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

model_id = "{repo_id}"
model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True, dtype=torch.bfloat16, device_map="auto")
processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "video", "video": "clip.mp4"}}, {{"type": "text", "text": "What happens?"}}]}}]
inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                       add_generation_prompt=True).to(model.device)
out = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```'''


def build_card(
    repo_id: str,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    training: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    adapter: bool = False,
) -> ModelCard:
    """A `ModelCard` with `pipeline_tag: image-text-to-text`, `library_name: transformers` and `custom_code`.

    Args:
        repo_id: Hub id used in the usage snippet (a local folder name is fine).
        base_models: ids of the checkpoints this model was trained from.
        datasets: ids (or names) of the training data.
        training: settings to list (stage, lr, batch, epochs, steps, final loss...).
        adapter: the folder holds a peft LoRA adapter rather than full weights.
    """
    tags = ["custom_code", "multimodal", "vision-language", "video-text-to-text", "image-text-to-text",
            "video-llava", "languagebind", "trl", "sft"]
    if adapter:
        tags += ["peft", "lora"]
    data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-text-to-text",
        license=license,
        language=["en"],
        base_model=list(base_models) if base_models else None,
        base_model_relation=("adapter" if adapter else "finetune") if base_models else None,
        datasets=list(datasets) if datasets else None,
        tags=tags,
    )
    settings = "\n".join(f"| {k} | {v} |" for k, v in (training or {}).items())
    name = repo_id.rstrip("/").split("/")[-1]
    body = f"""---
{data.to_yaml()}
---

# {name}

Video-LLaVA (LanguageBind image and video towers, one shared MLP projector, a Llama/Vicuna LLM) fine-tuned with
TRL's `SFTTrainer`. The architecture ships as Hub custom code: load it with `trust_remote_code=True`.

## Usage

{USAGE.format(repo_id=repo_id)}

## Training

| setting | value |
|---|---|
{settings}

Base models: {", ".join(base_models or []) or "n/a"}. Datasets: {", ".join(datasets or []) or "n/a"}.
"""
    return ModelCard(body)


def write_card(folder: str, repo_id: str, **kwargs: Any) -> str:
    """Write `README.md` into `folder` (replacing peft's generic one); returns its path."""
    path = os.path.join(folder, "README.md")
    build_card(repo_id, **kwargs).save(path)
    return path
