"""Test helpers: synthetic media written to tmp folders and a minimal stand-in processor.

`FakeProcessor` implements only what the collator uses (`apply_chat_template(..., return_assistant_tokens_mask=True)`,
`image_token_id`, `video_token_id`, `tokenizer`) with the Vicuna-v1 template, so data/collator tests do not depend on
the real processor; the end-to-end tests use the real one.
"""

from __future__ import annotations

import json
import os

import av
import numpy as np
import torch
from PIL import Image
from transformers import ProcessorMixin

from tests.tiny import tiny_config, tiny_tokenizer


SYSTEM = ("a chat between a curious user and an artificial intelligence assistant . the assistant gives helpful , "
          "detailed , and polite answers to the user 's questions .")
TEMPLATE = (
    "<s>" + SYSTEM + " {% for m in messages %}{% if m.role == 'user' %}USER : {{ m.content }} "
    "{% else %}ASSISTANT : {% generation %}{{ m.content }}</s>{% endgeneration %}{% endif %}{% endfor %}"
)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_image(path: str, colour: str = "red", size: int = 28) -> str:
    Image.new("RGB", (size, size), COLOURS[colour]).save(path)
    return path


def write_video(path: str, colour: str = "green", frames: int = 4, size: int = 32) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            array = np.zeros((size, size, 3), np.uint8)
            array[:, : (t + 1) * size // frames] = COLOURS[colour]
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_llava_json(root: str, n: int = 4) -> str:
    """`n` samples cycling image / video / image+video / text-only, with media under root/images, root/videos."""
    os.makedirs(f"{root}/images", exist_ok=True)
    os.makedirs(f"{root}/videos", exist_ok=True)
    records = []
    colours = list(COLOURS)
    for i in range(n):
        c = colours[i % 3]
        kind = i % 4
        rec = {"id": f"s{i}"}
        if kind in (0, 2):
            rec["image"] = write_image(f"{root}/images/{i}.png", c).split("/")[-1]
        if kind in (1, 2):
            rec["video"] = write_video(f"{root}/videos/{i}.mp4", c).split("/")[-1]
        prefix = {0: "<image>\n", 1: "<video>\n", 2: "<video>\n<image>\n", 3: ""}[kind]
        rec["conversations"] = [
            {"from": "human", "value": prefix + "what colour ?"},
            {"from": "gpt", "value": f"{c} ."},
            {"from": "human", "value": "what shape ?"},
            {"from": "gpt", "value": "a square ."},
        ]
        records.append(rec)
    path = f"{root}/train.json"
    with open(path, "w") as f:
        json.dump(records, f)
    return path


class FakeProcessor(ProcessorMixin):  # isinstance only: TRL checks the type
    def __init__(self, config=None) -> None:
        self.config = config or tiny_config()
        self.tokenizer = tiny_tokenizer()
        self.image_token_id = self.config.image_token_index
        self.video_token_id = self.config.video_token_index
        self.size = self.config.image_config.image_size

    def _pixels(self, frame) -> torch.Tensor:
        image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
        array = np.asarray(image.convert("RGB").resize((self.size, self.size)), np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)

    def apply_chat_template(self, conversations, tokenize=True, return_dict=True, return_tensors="pt",
                            return_assistant_tokens_mask=False, processor_kwargs=None):
        assert len(conversations) == 1
        images, videos, messages = [], [], []
        for m in conversations[0]:
            text = []
            for block in m["content"]:
                if block["type"] == "image":
                    images.append(self._pixels(block["image"]))
                    text.append("<image>" * self.config.image_seq_length + "\n")
                elif block["type"] == "video":
                    videos.append(torch.stack([self._pixels(f) for f in block["video"]]))
                    text.append("<video>" * self.config.video_seq_length + "\n")
                else:
                    text.append(block["text"])
            messages.append({"role": m["role"], "content": " ".join(text)})
        out = self.tokenizer.apply_chat_template(
            messages, chat_template=TEMPLATE, tokenize=True, return_dict=True, return_tensors="pt",
            return_assistant_tokens_mask=return_assistant_tokens_mask,
        )
        out = dict(out)
        if images:
            out["pixel_values"] = torch.stack(images)
        if videos:
            out["pixel_values_videos"] = torch.stack(videos)
        return out

    def save_pretrained(self, folder: str, **kwargs) -> None:
        self.tokenizer.save_pretrained(folder)


def real_processor(config=None):
    """The package's `LanguageBindVideoLlavaProcessor` for the tiny config and tokenizer."""
    from processing import build_processor

    return build_processor(config or tiny_config(), tiny_tokenizer())


def save_tiny_model(folder: str, seed: int = 0) -> str:
    """A tiny random model + its processor saved as a Hub custom-code folder (what stage 1 would start from)."""
    from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config())
    model.save_pretrained(folder)
    real_processor(model.config).save_pretrained(folder)
    return folder
