"""A test-only processor with the `VideoLlavaProcessor` call surface the runner uses, for the tiny model.

It exists because the real processor had not landed when these tests were written; it renders a llava_v1-like
prompt, expands `<video>` / `<image>` to the config's sequence lengths, decodes videos with PyAV (linspace frames)
and resizes to the tower's image size. Replace with `processing.VideoLlavaProcessor` once available.
"""

import av
import numpy as np
import torch
from PIL import Image

from tests.tiny import tiny_tokenizer


class TinyTestProcessor:
    chat_template = "USER: {media}\n{text} ASSISTANT:"

    def __init__(self, config) -> None:
        self.config = config
        self.tokenizer = tiny_tokenizer()
        self.tokenizer.padding_side = "left"
        self.size = config.image_config.image_size
        self.num_frames = config.video_config.num_frames

    def _frame(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB").resize((self.size, self.size)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1) * 2 - 1  # (3, H, W)

    def _video(self, path: str) -> torch.Tensor:
        with av.open(path) as container:
            frames = [f.to_image() for f in container.decode(video=0)]
        idx = np.linspace(0, len(frames) - 1, self.num_frames).round().astype(int)
        return torch.stack([self._frame(frames[i]) for i in idx])  # (T, 3, H, W)

    def apply_chat_template(self, conversations, add_generation_prompt=True, tokenize=False, return_dict=False,
                            return_tensors=None, padding=False):  # fmt: skip
        single = isinstance(conversations[0], dict)
        convs = [conversations] if single else conversations
        texts, images, videos = [], [], []
        for conv in convs:
            content = conv[0]["content"]
            media = "".join(f"<{c['type']}>" for c in content if c["type"] in ("image", "video"))
            text = " ".join(c["text"] for c in content if c["type"] == "text")
            texts.append(self.chat_template.format(media=media, text=text))
            for c in content:
                if c["type"] == "video":
                    videos.append(self._video(c["video"]))
                elif c["type"] == "image":
                    images.append(self._frame(c["image"]))
        if not tokenize:
            return texts[0] if single else texts
        expanded = [
            t.replace("<video>", "<video>" * self.config.video_seq_length).replace(
                "<image>", "<image>" * self.config.image_seq_length
            )
            for t in texts
        ]
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        out = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        if images:
            out["pixel_values"] = torch.stack(images)
        if videos:
            out["pixel_values_videos"] = torch.stack(videos)
        return out

    def batch_decode(self, ids, skip_special_tokens=True):
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)


def write_video(path, frames: int = 6, size: int = 32) -> None:
    """A tiny mp4: a white square moving left to right on black."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            arr = np.zeros((size, size, 3), np.uint8)
            arr[8:16, 4 * i : 4 * i + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
