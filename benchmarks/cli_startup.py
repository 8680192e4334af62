"""How long `mmplug list` takes to start, next to `import torch`, and whether it imports torch;
then `mmplug list` and `mmplug info` with 50 more plugin distributions installed, side by side
with the bare environment, with the registry snapshot off, cold and warm.

Listing components reads the registry only, so it should stay well under the time torch takes
to import, and cost about the same however many plugins are installed. Each command runs as a
fresh subprocess with this script's interpreter; one untimed run of each warms the file-system
cache first. The snapshots go to a temporary MMPLUG_CACHE_DIR, never the user's.

Usage::

    python benchmarks/cli_startup.py [--repeat N] [--plugins N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TARGET_S = 0.5
#: What `mmplug list` and `info` should take, warm, with 50 plugins installed.
PLUGINS_TARGET_S = 0.2

# A small plugin as a third party writes one: a params model, an encoder and a fusion, both
# factories named by string.
FAKE_PLUGIN = """\
from pydantic import Field
from mmplug import Params, hookimpl


class Params{n}(Params):
    \"\"\"Parameters of fake{n}-enc.\"\"\"

    dim: int = Field(default=64, ge=1, description="Output size.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout.")


@hookimpl
def register_encoders(register):
    register("fake{n}-enc", "mmplug_fake{n}.impl:Encoder", params=Params{n}, modality="text",
             summary="A fake encoder")


@hookimpl
def register_fusions(register):
    register("fake{n}-fuse", "mmplug_fake{n}.impl:Fusion", summary="A fake fusion")
"""

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
    return [run_once(command) for _ in range(repeat + 1)][1:]


def run_once(command: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Seconds one run of ``command`` takes (in ``env``, default this process's); a run
    that fails ends the benchmark with its error."""
    start = time.perf_counter()
    result = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, env=env
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr.strip()}")
    return elapsed


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


def write_fake_plugins(site: Path, count: int) -> None:
    """``count`` plugin distributions in ``site``, as pip installs them: a module and a
    dist-info folder (METADATA, entry_points.txt) each."""
    for index in range(count):
        n = f"{index:02d}"
        (site / f"mmplug_fake{n}").mkdir()
        (site / f"mmplug_fake{n}" / "__init__.py").write_text(FAKE_PLUGIN.format(n=n))
        info = site / f"mmplug_fake{n}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: mmplug-fake{n}\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(f"[mmplug]\nfake{n} = mmplug_fake{n}\n")


def compare_plugins(count: int, repeat: int) -> None:
    """`mmplug list` and `mmplug info` with ``count`` fake plugins next to none, with the
    snapshot off, cold (each run after removing it) and warm.

    The two environments take turns run by run (and keep their snapshots apart), so that
    whatever else the machine is doing slows both alike.
    """
    with tempfile.TemporaryDirectory(prefix="mmplug-bench-") as folder:
        site = Path(folder) / "site"
        site.mkdir()
        write_fake_plugins(site, count)
        base = {k: v for k, v in os.environ.items() if not k.startswith("MMPLUG_")}
        environments = {
            "bare": base | {"MMPLUG_CACHE_DIR": f"{folder}/cache-bare"},
            f"{count} plugins": base
            | {"MMPLUG_CACHE_DIR": f"{folder}/cache-plugins", "PYTHONPATH": str(site)},
        }
        modes = {"snapshot off": {"MMPLUG_NO_CACHE": "1"}, "cold (1st run)": {}, "warm": {}}
        commands = {"list": ["list"], "info classification": ["info", "classification"]}
        labels = list(environments)
        print(f"\n{count} fake plugin distributions ({2 * count} components) on PYTHONPATH:")
        print(f"  {'median of ' + str(repeat):<32}{labels[0]:>10}{labels[1]:>14}  ratio")
        warm = {}
        for command_label, words in commands.items():
            print(f"  mmplug {command_label}")
            for mode, extra in modes.items():
                times: dict[str, list[float]] = {label: [] for label in labels}
                for index in range(repeat + 1):  # the first round is the untimed warm-up
                    for label, env in environments.items():
                        if mode.startswith("cold"):
                            shutil.rmtree(env["MMPLUG_CACHE_DIR"], ignore_errors=True)
                        seconds = run_once([*mmplug_command(), *words], env | extra)
                        if index:
                            times[label].append(seconds)
                medians = [statistics.median(times[label]) for label in labels]
                print(
                    f"    {mode:<30}{medians[0]:>8.3f} s{medians[1]:>12.3f} s"
                    f"  {medians[1] / medians[0]:.2f}"
                )
                if mode == "warm":
                    warm[command_label] = medians[1]
        for command_label, seconds in warm.items():
            verdict = "under" if seconds < PLUGINS_TARGET_S else "NOT under"
            print(
                f"mmplug {command_label} with {count} plugins, warm: {seconds:.3f} s, {verdict} "
                f"the {PLUGINS_TARGET_S} s target"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=5, metavar="N", help="timed runs per command (default 5)"
    )
    parser.add_argument(
        "--plugins",
        type=int,
        default=50,
        metavar="N",
        help="fake plugin distributions for the second part (default 50; 0 skips it)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.plugins < 0:
        parser.error("--plugins must be 0 or more")
    with tempfile.TemporaryDirectory(prefix="mmplug-bench-cache-") as cache:
        os.environ["MMPLUG_CACHE_DIR"] = cache  # the runs' snapshots: not the user's
        time_startup(args.repeat)
    if args.plugins:
        compare_plugins(args.plugins, args.repeat)
    return 0


def time_startup(repeat: int) -> None:
    """`mmplug list` next to `python -c pass` and `import torch`, and the torch check."""
    list_command = [*mmplug_command(), "list"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mmplug list": list_command,
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    print(f"interpreter: {sys.executable}")
    print(f"mmplug list: {' '.join(list_command)}")
    print(f"{repeat} timed runs each, after one warm-up run\n")
    medians = {}
    width = max(map(len, commands))
    for label, command in commands.items():
        times = time_command(command, repeat)
        medians[label] = statistics.median(times)
        print(f"  {label:<{width}}  median {medians[label]:.3f} s  min {min(times):.3f} s")

    list_s = medians["mmplug list"]
    torch_s = medians["python -c 'import torch'"]
    print(f"\nmmplug list / import torch (medians): {list_s / torch_s:.2f}")
    verdict = "under" if list_s < TARGET_S else "NOT under"
    print(f"mmplug list median {list_s:.3f} s is {verdict} the {TARGET_S} s target")
    imported = torch_imported_by_list()
    print(f"torch imported by mmplug list: {'YES' if imported else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
