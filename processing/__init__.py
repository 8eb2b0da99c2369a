"""Video-LLaVA preprocessing: video decoding, image / video transforms and the unified processor."""

from .image_processing_videollava import LanguageBindImageProcessor
from .processing_videollava import (CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, LanguageBindVideoLlavaProcessor, build_processor,
                                   register_auto_classes)
from .video_io import VideoClip, VideoDecodeError, load_video, sample_indices
from .video_processing_videollava import transform_video


__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "VideoClip",
    "VideoDecodeError",
    "LanguageBindImageProcessor",
    "LanguageBindVideoLlavaProcessor",
    "build_processor",
    "load_video",
    "register_auto_classes",
    "sample_indices",
    "transform_video",
]
