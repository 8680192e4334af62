"""Atomic writes: a file or folder appears whole at its final path, or not at all.

Each is written next to its destination and renamed into place, so a process killed at any
moment leaves the previous version intact (a rename within a folder is atomic on POSIX and
on Windows).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the parent folder is created if needed."""
    with staged_file(path) as staging:
        staging.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; renamed onto ``path`` when the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):
        if stale.is_file():  # left by a killed process
            stale.unlink(missing_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    staging = Path(name)
    try:
        os.chmod(staging, 0o666 & ~_umask())  # mkstemp makes it private; keep the usual mode
        yield staging
        with staging.open("rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it replaces ``path`` on success.

    Two renames swap it in (the old folder is set aside first, then removed). A process
    killed between them leaves the old folder as ``.NAME.old``, which :func:`existing_dir`
    still finds.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):
        if stale.is_dir() and stale != _retired(target):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _retired(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _swap_in(staging: Path, target: Path) -> None:
    retired = _retired(target)
    if target.exists():
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def existing_dir(path: str | Path) -> Path | None:
    """``path`` if it is a folder; else the version :func:`staged_dir` set aside; else None."""
    target = Path(path)
    if target.is_dir():
        return target
    retired = _retired(target)
    return retired if retired.is_dir() else None
