"""lmms-eval plugin of this package: model `videollava_lb` and the local task `videollava_samples`.

Two ways lmms-eval 0.7.3 finds it: the `lmms_eval.models` entry point (setup.cfg; `manifests` below), or
`LMMS_EVAL_PLUGINS=evaluation.lmms_plugin`, which reads `models.AVAILABLE_MODELS` and adds `tasks/` to the task path.
"""


def manifests() -> list:
    """Payload of the `lmms_eval.models` entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="videollava_lb",
                          simple_class_path="evaluation.lmms_plugin.models.videollava_lb.VideoLlavaLB")]
