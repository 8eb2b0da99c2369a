"""lmms-eval plugin package: `LMMS_EVAL_PLUGINS=evaluation.lmms_plugin` makes `--model videollava_lb` available."""
