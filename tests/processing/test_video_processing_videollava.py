"""transform_video follows LanguageBind's decord-path transform (SPEC §7.3) minus the random flip."""

import numpy as np
import torch
import torch.nn.functional as F

from processing import transform_video
from processing.video_processing_videollava import short_side_size


MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def test_short_side_rule_is_pytorchvideo_floor():
    assert short_side_size(720, 1280, 224) == (224, 398)
    assert short_side_size(1280, 720, 224) == (398, 224)
    assert short_side_size(47, 63, 28) == (28, 37)
    assert short_side_size(50, 50, 28) == (28, 28)


def test_reference_order_normalise_resize_crop():
    frames = np.random.default_rng(0).integers(0, 256, (3, 47, 63, 3), dtype=np.uint8)
    out = transform_video(frames, 28, MEAN, STD)
    assert out.shape == (3, 3, 28, 28) and out.dtype == torch.float32
    # LanguageBind on (C, T, H, W): /255, NormalizeVideo, ShortSideScale (bilinear), CenterCropVideo (round)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(3, 1, 1, 1)) / torch.tensor(STD).view(3, 1, 1, 1)
    x = F.interpolate(x, size=(28, 37), mode="bilinear", align_corners=False)
    i, j = int(round((28 - 28) / 2.0)), int(round((37 - 28) / 2.0))
    expected = x[..., i : i + 28, j : j + 28].permute(1, 0, 2, 3)  # (C, T, H, W) -> (T, C, H, W)
    torch.testing.assert_close(out, expected)


def test_deterministic_no_flip():
    frames = np.random.default_rng(1).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    torch.testing.assert_close(transform_video(frames, 28), transform_video(frames, 28), rtol=0, atol=0)
    flipped = transform_video(frames[:, :, ::-1], 28)
    assert not torch.equal(flipped, transform_video(frames, 28))
