"""`videollava_samples`: the questions about the media shipped in `videollava/samples/` (images and videos)."""
