"""Atomic writes: a file or folder appears whole at its final path, or not at all.

Each is written next to its destination, under a staging name that carries the writer's
process id (``.NAME.<pid>.<random>``), and renamed into place, so a process killed at any
moment leaves the previous version intact (a rename within a folder is atomic on POSIX and
on Windows). Staging files are cleaned up only when the process that made them is gone:
two writers never delete each other's work. Every file gets the usual permissions (the
umask's), including those a library wrote privately inside a staged folder.

A full disk is a one-line :class:`~mmplug.errors.MmplugError` naming the file, not a
traceback; the previous version stays where it was. :func:`default_cache_root` is where
mmplug's caches go.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from mmplug.errors import MmplugError


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where mmplug's caches live (the registry snapshot, the feature cache):
    ``$MMPLUG_CACHE_DIR``, else the user cache folder as platformdirs finds it
    (``$XDG_CACHE_HOME/mmplug``, else ``~/.cache/mmplug`` on Linux)."""
    env = os.environ if environ is None else environ
    if env.get("MMPLUG_CACHE_DIR"):
        return Path(env["MMPLUG_CACHE_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmplug", appauthor=False))


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
    with _disk_full_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in _abandoned(target):
            if stale.is_file():
                stale.unlink(missing_ok=True)
        handle, name = tempfile.mkstemp(prefix=_prefix(target), dir=target.parent)
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
    with _disk_full_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in _abandoned(target):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_prefix(target), dir=target.parent))
        try:
            yield staging
            usual_permissions(staging)
            _swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def usual_permissions(folder: Path) -> None:
    """Give ``folder`` and everything in it the mode a plain ``open``/``mkdir`` would (the
    umask's): libraries that write through private temporary files leave mode 600."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(root) / name, 0o666 & ~mask)


@contextlib.contextmanager
def _disk_full_named(target: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise MmplugError(
            f"could not write {target}: {os.strerror(exc.errno)}; its previous version, if "
            "it had one, is intact. Free some space and run the command again"
        ) from None


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _abandoned(target: Path) -> Iterator[Path]:
    """Staging files and folders of ``target`` whose writer is no longer running."""
    for candidate in target.parent.glob(f".{target.name}.*.*"):
        pid = candidate.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            yield candidate


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # no cheap, harmless probe: never take another's files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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
