"""Model table read by lmms-eval's plugin loader (`{plugin}.models.AVAILABLE_MODELS`)."""

AVAILABLE_MODELS = {"videollava_lb": "VideoLlavaLB"}
