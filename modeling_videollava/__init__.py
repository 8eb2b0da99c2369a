"""Video-LLaVA with LanguageBind image and video towers, as Hugging Face Hub-native code."""

from .configuration_videollava import LanguageBindVisionConfig, LanguageBindVideoLlavaConfig
from .modeling_languagebind import LanguageBindVisionModel
from .modeling_videollava import (
    LanguageBindVideoLlavaForConditionalGeneration,
    LanguageBindVideoLlavaModel,
    LanguageBindVideoLlavaMultiModalProjector,
    LanguageBindVideoLlavaPreTrainedModel,
)


__all__ = [
    "LanguageBindVisionConfig",
    "LanguageBindVisionModel",
    "LanguageBindVideoLlavaConfig",
    "LanguageBindVideoLlavaForConditionalGeneration",
    "LanguageBindVideoLlavaModel",
    "LanguageBindVideoLlavaMultiModalProjector",
    "LanguageBindVideoLlavaPreTrainedModel",
]
