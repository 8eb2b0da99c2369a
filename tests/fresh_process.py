"""Run Python in a fresh process where our packages cannot be imported, as on a user's machine with only the
downloaded Hub folder (our package may be pip-installed in the test environment, so hiding it is explicit)."""

import os
import subprocess
import sys
import textwrap


HIDE_OUR_PACKAGES = textwrap.dedent(
    """
    import importlib.abc as _abc, sys as _sys


    class _HideOurPackages(_abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"modeling_videollava", "processing", "training", "videollava", "evaluation",
                                      "tests"}:
                raise ImportError(f"{name} is hidden: only the Hub folder's code may be used")


    _sys.meta_path.insert(0, _HideOurPackages())
    """
)


def run_fresh(script: str, *args: str, cwd, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` (source text) in a new interpreter with our packages hidden; returns the completed process."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", HIDE_OUR_PACKAGES + textwrap.dedent(script), *map(str, args)],
        cwd=cwd, env=base | (env or {}), capture_output=True, text=True, timeout=timeout,
    )
