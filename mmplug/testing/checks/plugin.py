"""Checks of a plugin's entry-point module, which every ``mmplug list`` imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: Libraries an entry-point module must not import: they take seconds to load, and listing
#: or validating needs none of them (factories named by string import them when building).
HEAVY = ("torch", "torchvision", "torchaudio", "transformers", "tokenizers")

# Loads the plugin as `mmplug list` does (import, the register_* hooks, then
# register_commands), then prints its failure, if any, and the heavy modules imported.
_PROBE = """
import argparse, json, sys
from mmplug.plugins.host import PluginHost
host = PluginHost()
record = host.add_module(sys.argv[1], name="probe", distribution="probe", version="0")
problems = host.add_commands(argparse.ArgumentParser().add_subparsers())
print(json.dumps({
    "error": record.error or "; ".join(problems) or None,
    "heavy": [m for m in sys.argv[2:] if m in sys.modules],
}))
"""


def check_imports_no_torch(module: str) -> None:
    """Loading the entry point (``module`` or ``module:object``) in a fresh interpreter as the
    ``mmplug`` command does (import, every hook, ``register_commands`` included) works and
    imports no heavy library."""
    # this process's path, so that the module resolves as it does here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, (
        f"entry-point module {module!r} fails to load: {result.stderr.strip()[-2000:]}"
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["error"] is None, f"entry point {module!r} fails to load: {report['error']}"
    heavy = report["heavy"]
    assert not heavy, (
        f"entry-point module {module!r} imports {', '.join(heavy)}, which every 'mmplug list' "
        "then pays for: keep hookimpls and params models there, and name factories by "
        "'module:attr' strings, imported when a model is built"
    )
