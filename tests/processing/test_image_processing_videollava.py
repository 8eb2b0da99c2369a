"""LanguageBindImageProcessor equals transformers' CLIPImageProcessor, converts every PIL mode, pads like LLaVA."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from processing import LanguageBindImageProcessor
from processing.image_processing_videollava import to_rgb


SIZES = dict(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})


def _image(height: int = 40, width: int = 60, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("shape", [(40, 60), (61, 33), (28, 28), (224, 300)])
def test_equals_clip_image_processor(shape):
    ours = LanguageBindImageProcessor(**SIZES)
    reference = CLIPImageProcessor(**SIZES)
    image = _image(*shape)
    expected = reference(image, return_tensors="pt")["pixel_values"]
    actual = ours(image, return_tensors="pt")["pixel_values"]
    assert actual.shape == (1, 3, 28, 28)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_defaults_are_languagebind_224():
    processor = LanguageBindImageProcessor()
    assert processor.size["shortest_edge"] == 224 and processor.crop_size["height"] == 224
    assert tuple(processor.image_mean) == (0.48145466, 0.4578275, 0.40821073)
    assert processor(_image(300, 400), return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)


def test_pad_to_square_matches_expand2square():
    image = _image(20, 50)
    side = 50
    canvas = Image.new("RGB", (side, side), (122, 116, 104))  # LLaVA expand2square with the CLIP mean colour
    canvas.paste(image, (0, (side - 20) // 2))
    expected = CLIPImageProcessor(**SIZES)(canvas, return_tensors="pt")["pixel_values"]
    processor = LanguageBindImageProcessor(pad_to_square=True, **SIZES)
    torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"], expected, rtol=0, atol=0)
    per_call = LanguageBindImageProcessor(**SIZES)(image, pad_to_square=True, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(per_call, expected, rtol=0, atol=0)


def test_every_pil_mode_becomes_rgb():
    rgb = _image(30, 30)
    gray = np.asarray(rgb.convert("L"))
    images = {
        "L": rgb.convert("L"),
        "1": rgb.convert("1"),
        "P": rgb.convert("P"),
        "CMYK": rgb.convert("CMYK"),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": rgb.convert("I"),
        "F": rgb.convert("F"),
        "LA": rgb.convert("LA"),
    }
    processor = LanguageBindImageProcessor(**SIZES)
    for mode, image in images.items():
        assert to_rgb(image).mode == "RGB", mode
        assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 28, 28), mode
    np.testing.assert_array_equal(np.asarray(to_rgb(images["I;16"]))[..., 0], gray)  # 16-bit scaled, not clipped


def test_transparent_pixels_composite_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    converted = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert converted[0, 0].tolist() == [255, 0, 0] and converted[3, 3].tolist() == [255, 255, 255]
    palette = Image.fromarray(rgba, "RGBA").convert("P")
    assert to_rgb(palette).mode == "RGB"
