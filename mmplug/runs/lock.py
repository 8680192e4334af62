"""One writer per run directory: an exclusive OS file lock held for the life of a run.

``mmplug train`` (a new run or ``--resume``) takes the lock on ``RUN/.lock`` before it
reads or writes anything there, and holds it until it returns. The lock is the operating
system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows), so it dies with its process:
a run killed with ``kill -9`` leaves no stale lock, and the next ``--resume`` just takes
it. A second writer gets a one-line error naming the holder's pid. Readers (``evaluate``,
``predict``) don't lock: checkpoints are swapped in whole.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mmplug.errors import MmplugError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked_run(folder: str | Path) -> Iterator[Path]:
    """Hold the run directory ``folder``'s lock (creating the folder if needed).

    Raises:
        MmplugError: another live process holds it (named by pid).
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    handle = (path / LOCK_FILE).open("a+", encoding="ascii")
    try:
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise MmplugError(
                f"{path} is in use by another mmplug process (pid {holder}); wait for it to "
                "end, or choose another --out"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the lock


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
