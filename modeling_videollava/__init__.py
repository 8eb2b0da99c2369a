"""Video-LLaVA with LanguageBind image and video towers, as Hugging Face Hub-native code."""

from .configuration_videollava import LanguageBindVisionConfig, VideoLlavaConfig


__all__ = ["LanguageBindVisionConfig", "VideoLlavaConfig"]
