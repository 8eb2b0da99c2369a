"""Video frame transform of Video-LLaVA's LanguageBind video tower (SPEC §7.3), in plain torch.

LanguageBind (decord path): `x / 255 -> Normalize(mean, std) -> ShortSideScale(224, bilinear) -> CenterCropVideo(224)
-> RandomHorizontalFlipVideo(0.5)`. The random flip is left out on purpose (it made the original inference
stochastic); everything else follows pytorchvideo / torchvision `_functional_video` exactly, including the
`floor` short-side rule, no antialiasing and `round` crop offsets. Uploaded as Hub custom code.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """pytorchvideo `ShortSideScale`: the short side becomes `size`, the long side `floor(long / short * size)`."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def transform_video(
    frames: np.ndarray | torch.Tensor,
    size: int = 224,
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073),
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711),
) -> torch.Tensor:
    """Frames `(T, H, W, 3)` uint8 -> normalised, resized and center-cropped `(T, 3, size, size)` float32."""
    video = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    video = video.permute(0, 3, 1, 2).float() / 255.0  # (T, H, W, 3) -> (T, 3, H, W)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    video = (video - mean) / std
    height, width = video.shape[-2:]
    new_h, new_w = short_side_size(height, width, size)
    video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return video[..., top : top + size, left : left + size].contiguous()  # (T, 3, size, size)


__all__ = ["short_side_size", "transform_video"]
