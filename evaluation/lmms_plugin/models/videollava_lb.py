"""Import target for lmms-eval's plugin loader: `evaluation.lmms_plugin.models.videollava_lb.VideoLlavaLB`."""

from evaluation.lmms_eval_adapter import VideoLlavaLB


__all__ = ["VideoLlavaLB"]
