"""Video-LLaVA with LanguageBind image and video towers, as Hugging Face Hub-native code."""

from .configuration_videollava import LanguageBindVisionConfig, VideoLlavaConfig
from .modeling_languagebind import LanguageBindVisionModel
from .modeling_videollava import (
    VideoLlavaForConditionalGeneration,
    VideoLlavaModel,
    VideoLlavaMultiModalProjector,
    VideoLlavaPreTrainedModel,
)


__all__ = [
    "LanguageBindVisionConfig",
    "LanguageBindVisionModel",
    "VideoLlavaConfig",
    "VideoLlavaForConditionalGeneration",
    "VideoLlavaModel",
    "VideoLlavaMultiModalProjector",
    "VideoLlavaPreTrainedModel",
]
