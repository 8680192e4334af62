"""How long `mmplug list` takes to start, next to `import torch`, and whether it imports torch.

Listing components reads the registry only, so it should stay well under the time torch takes
to import. Each command runs as a fresh subprocess with this script's interpreter; one untimed
run of each warms the file-system cache first.

Usage::

    python benchmarks/cli_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TARGET_S = 0.5

# Runs `mmplug list` in-process with its table discarded, then reports whether torch got
# imported on the way.
TORCH_CHECK = """\
import contextlib, io, sys
import mmplug.cli
with contextlib.redirect_stdout(io.StringIO()):
    code = mmplug.cli.main(["list"])
print("torch" in sys.modules, code)
"""


def mmplug_command() -> list[str]:
    """The `mmplug` console script next to this interpreter, else `python -m mmplug`."""
    bin_dir = Path(sys.executable).parent
    for name in ("mmplug", "mmplug.exe"):
        script = bin_dir / name
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    return [sys.executable, "-m", "mmplug"]


def time_command(command: Sequence[str], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` runs of ``command``, after one untimed warm-up run."""
    times = []
    for index in range(repeat + 1):
        start = time.perf_counter()
        result = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(
                f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr.strip()}"
            )
        if index:
            times.append(elapsed)
    return times


def torch_imported_by_list() -> bool:
    """Whether running `mmplug list` (in a fresh interpreter) imports torch."""
    result = subprocess.run(
        [sys.executable, "-c", TORCH_CHECK], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"the torch check failed:\n{result.stderr.strip()}")
    imported, code = result.stdout.split()[-2:]
    if code != "0":
        sys.exit(f"mmplug list exited with {code}:\n{result.stderr.strip()}")
    return imported == "True"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=5, metavar="N", help="timed runs per command (default 5)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    list_command = [*mmplug_command(), "list"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mmplug list": list_command,
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    print(f"interpreter: {sys.executable}")
    print(f"mmplug list: {' '.join(list_command)}")
    print(f"{args.repeat} timed runs each, after one warm-up run\n")
    medians = {}
    width = max(map(len, commands))
    for label, command in commands.items():
        times = time_command(command, args.repeat)
        medians[label] = statistics.median(times)
        print(f"  {label:<{width}}  median {medians[label]:.3f} s  min {min(times):.3f} s")

    list_s = medians["mmplug list"]
    torch_s = medians["python -c 'import torch'"]
    print(f"\nmmplug list / import torch (medians): {list_s / torch_s:.2f}")
    verdict = "under" if list_s < TARGET_S else "NOT under"
    print(f"mmplug list median {list_s:.3f} s is {verdict} the {TARGET_S} s target")
    imported = torch_imported_by_list()
    print(f"torch imported by mmplug list: {'YES' if imported else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
