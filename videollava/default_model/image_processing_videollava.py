"""Image preprocessing of Video-LLaVA's LanguageBind image tower (SPEC §7.2), without torchvision.

`LanguageBindImageProcessor` is transformers' PIL CLIP processor (shortest side -> 224 bicubic, center crop 224,
rescale, OpenAI-CLIP mean/std) plus two things the original data loader needs: conversion of any PIL mode to RGB
and LLaVA's `expand2square` padding with the mean colour (122, 116, 104) used for fine-tuning and evaluation
(`pad_to_square=True`). Uploaded as Hub custom code: imports only installed libraries.
"""

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil
from transformers.processing_utils import ImagesKwargs

from .video_sources import load_image_source


BACKGROUND = (255, 255, 255)


class LanguageBindImageProcessorKwargs(ImagesKwargs, total=False):
    pad_to_square: bool


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any PIL mode to RGB: alpha is composited on `background`, 16/32-bit and float modes are scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 1.0 if array.max(initial=0) <= 255 else (257.0 if array.max() <= 65535 else array.max() / 255)
        return Image.fromarray(np.clip(array / scale, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("PA", "RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def expand_to_square(image: np.ndarray, fill: tuple[int, ...]) -> np.ndarray:
    """LLaVA's `expand2square` on a (C, H, W) array: centre it on a square canvas of side max(H, W)."""
    channels, height, width = image.shape
    if height == width:
        return image
    side = max(height, width)
    canvas = np.empty((channels, side, side), dtype=image.dtype)
    canvas[:] = np.asarray(fill, dtype=image.dtype)[:channels, None, None]
    top, left = (side - height) // 2, (side - width) // 2
    canvas[:, top : top + height, left : left + width] = image
    return canvas


class LanguageBindImageProcessor(CLIPImageProcessorPil):
    r"""
    CLIP image processor of the LanguageBind image tower, with robust RGB conversion and optional pad-to-square.

    Args:
        pad_to_square (`bool`, defaults to `False`):
            Pad to a square with the mean colour before resizing (`image_aspect_ratio="pad"` of the fine-tune and
            eval settings, SPEC §7.2). Stage-1 pre-training and the original CLI do not pad.
        **kwargs: any `CLIPImageProcessorPil` argument (`size`, `crop_size`, `image_mean`, ...).
    """

    valid_kwargs = LanguageBindImageProcessorKwargs
    model_input_names = ["pixel_values"]
    pad_to_square = False

    @classmethod
    def for_image_size(cls, size: int) -> "LanguageBindImageProcessor":
        """The processor of a tower trained at `size` px: shortest edge resized to `size`, centre crop `size` x `size`
        (what `LanguageBindVideoLlavaProcessor.from_config` gives the model, and what tower training must feed)."""
        return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    def fetch_images(self, image_url_or_urls):
        """Paths and `data:` / `http(s)://` URLs -> PIL images (size cap, timeout, short error messages)."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(x) for x in image_url_or_urls]
        return load_image_source(image_url_or_urls) if isinstance(image_url_or_urls, str) else image_url_or_urls

    def process_image(self, image, do_convert_rgb: bool | None = None, input_data_format=None, **kwargs) -> np.ndarray:
        if isinstance(image, Image.Image) and do_convert_rgb is not False:
            image = to_rgb(image)
        return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format,
                                     **kwargs)

    def _preprocess(self, images: list[np.ndarray], pad_to_square: bool | None = None, **kwargs):
        if pad_to_square:
            # expand2square fills with tuple(int(m * 255) for m in mean) = (122, 116, 104) for CLIP
            fill = tuple(int(m * 255) for m in self.image_mean)
            images = [expand_to_square(image, fill) for image in images]
        return super()._preprocess(images, **kwargs)


__all__ = ["LanguageBindImageProcessor", "expand_to_square", "to_rgb"]
