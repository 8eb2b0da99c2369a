"""lmms-eval task folder of the plugin: lmms-eval adds it to its task search path for every package named in
`LMMS_EVAL_PLUGINS` (it requires `{plugin}.tasks`). `videollava_samples/` is a local task on the shipped samples."""
