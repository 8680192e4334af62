"""Atomic writes: a file or folder appears whole at its final path, or not at all."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmplug.errors import MmplugError
from mmplug.files import existing_dir, staged_dir, staged_file, write_bytes, write_text


class Boom(Exception):
    pass


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process's umask after a test that sets its own."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


# -- write_text / write_bytes -------------------------------------------------------------


def test_write_text_creates_the_parent_and_writes_utf8(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "notes.txt"
    assert write_text(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    assert names(target.parent) == {"notes.txt"}  # no staging file left next to it


def test_write_bytes_replaces_a_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old old old")
    assert write_bytes(str(target), b"\x00\x01new") == target
    assert target.read_bytes() == b"\x00\x01new"
    assert names(tmp_path) == {"data.bin"}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_file_mode_follows_the_umask_like_a_normal_file(
    tmp_path: Path, umask: None, mask: int
) -> None:
    os.umask(mask)
    normal = tmp_path / "normal.txt"
    normal.write_text("x")
    written = write_text(tmp_path / "atomic.txt", "x")
    assert mode(written) == mode(normal) == 0o666 & ~mask


# -- staged_file --------------------------------------------------------------------------


def test_staged_file_appears_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.bin"
    with staged_file(target) as staging:
        assert staging.parent == target.parent
        assert staging.name.startswith(".model.bin.")
        staging.write_bytes(b"weights")
        assert not target.exists()  # not at the final path before the block ends
    assert target.read_bytes() == b"weights"
    assert names(target.parent) == {"model.bin"}


def test_a_failed_block_leaves_nothing_at_a_new_target(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    with pytest.raises(Boom), staged_file(target) as staging:
        staging.write_bytes(b"half")
        raise Boom
    assert names(tmp_path) == set()


def test_a_failed_block_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"previous")
    with pytest.raises(Boom), staged_file(target) as staging:
        staging.write_bytes(b"half")
        raise Boom
    assert target.read_bytes() == b"previous"
    assert names(tmp_path) == {"model.bin"}


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that is running (a second writer)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_staging_files_of_a_killed_process_are_removed(tmp_path: Path, dead_pid: int) -> None:
    (tmp_path / f".metrics.jsonl.{dead_pid}.k1ll3d").write_text("partial")
    (tmp_path / f".other.jsonl.{dead_pid}.k1ll3d").write_text("another name's")
    (tmp_path / ".metrics.jsonl.x").write_text("no pid: not a staging name")
    (tmp_path / "metrics.jsonl.bak").write_text("not a staging file")
    (tmp_path / f".metrics.jsonl.{dead_pid}.dir").mkdir()  # a folder is not a file's leftover
    write_text(tmp_path / "metrics.jsonl", "{}\n")
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"
    assert names(tmp_path) == {
        "metrics.jsonl",
        f".other.jsonl.{dead_pid}.k1ll3d",
        ".metrics.jsonl.x",
        "metrics.jsonl.bak",
        f".metrics.jsonl.{dead_pid}.dir",
    }


def test_staging_files_of_a_running_writer_are_left_alone(tmp_path: Path, live_pid: int) -> None:
    theirs = tmp_path / f".metrics.jsonl.{live_pid}.busy"
    theirs.write_text("being written")
    write_text(tmp_path / "metrics.jsonl", "{}\n")
    assert theirs.read_text() == "being written"


def test_the_staging_name_carries_the_writer_pid(tmp_path: Path) -> None:
    with staged_file(tmp_path / "a.txt") as staging:
        assert staging.name.startswith(f".a.txt.{os.getpid()}.")
    with staged_dir(tmp_path / "best") as folder:
        assert folder.name.startswith(f".best.{os.getpid()}.")


def test_a_full_disk_names_the_file_and_keeps_the_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"previous")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with (
        pytest.raises(MmplugError, match=r"could not write .*model.bin: No space left"),
        staged_file(target),
    ):
        raise full
    assert target.read_bytes() == b"previous"
    assert names(tmp_path) == {"model.bin"}


def test_other_os_errors_are_not_reworded(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), staged_file(tmp_path / "x"):
        raise PermissionError(errno.EACCES, "denied")


def test_private_files_written_in_a_staged_folder_get_the_usual_mode(
    tmp_path: Path, umask: None
) -> None:
    os.umask(0o022)
    with staged_dir(tmp_path / "best") as staging:
        private = staging / "model.safetensors"
        private.write_bytes(b"w")
        os.chmod(private, 0o600)  # as a library writing through mkstemp leaves it
    assert mode(tmp_path / "best" / "model.safetensors") == 0o644


# -- staged_dir / existing_dir ------------------------------------------------------------


def test_staged_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "best"
    (target / "sub").mkdir(parents=True)
    (target / "old.txt").write_text("old")
    (target / "sub" / "deep.txt").write_text("old")
    with staged_dir(target) as staging:
        assert staging.is_dir() and list(staging.iterdir()) == []
        assert staging.name.startswith(".best.")
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # untouched until the block ends
    assert names(target) == {"new.txt"}
    assert (target / "new.txt").read_text() == "new"
    assert names(tmp_path) == {"best"}  # neither staging nor the old folder is left


def test_staged_dir_creates_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "last"
    with staged_dir(target) as staging:
        (staging / "a").write_text("1")
    assert names(target) == {"a"}
    assert names(target.parent) == {"last"}


def test_an_exception_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "best"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(Boom), staged_dir(target) as staging:
        (staging / "weights").write_text("half")
        raise Boom
    assert names(target) == {"weights"}
    assert (target / "weights").read_text() == "old"
    assert names(tmp_path) == {"best"}


def test_folder_mode_follows_the_umask(tmp_path: Path, umask: None) -> None:
    os.umask(0o027)
    normal = tmp_path / "normal"
    normal.mkdir()
    with staged_dir(tmp_path / "atomic"):
        pass
    assert mode(tmp_path / "atomic") == mode(normal) == 0o750


def test_stale_staging_folders_are_removed(tmp_path: Path, dead_pid: int) -> None:
    (tmp_path / f".last.{dead_pid}.k1ll3d").mkdir()
    (tmp_path / f".last.{dead_pid}.k1ll3d" / "weights").write_text("partial")
    (tmp_path / f".lastly.{dead_pid}.k1ll3d").mkdir()  # another name's
    with staged_dir(tmp_path / "last") as staging:
        (staging / "weights").write_text("new")
    assert names(tmp_path) == {"last", f".lastly.{dead_pid}.k1ll3d"}


def kill_between_the_renames(tmp_path: Path) -> Path:
    """The state a process killed after setting the old ``best/`` aside leaves."""
    retired = tmp_path / ".best.old"
    retired.mkdir()
    (retired / "weights").write_text("old")
    return retired


def test_existing_dir_finds_the_folder_set_aside_by_a_killed_process(tmp_path: Path) -> None:
    retired = kill_between_the_renames(tmp_path)
    assert existing_dir(tmp_path / "best") == retired
    assert existing_dir(str(tmp_path / "best")) == retired


def test_existing_dir_prefers_the_real_folder(tmp_path: Path) -> None:
    kill_between_the_renames(tmp_path)
    (tmp_path / "best").mkdir()
    assert existing_dir(tmp_path / "best") == tmp_path / "best"


def test_existing_dir_of_nothing_is_none(tmp_path: Path) -> None:
    assert existing_dir(tmp_path / "best") is None
    (tmp_path / "best").write_text("a file, not a folder")
    assert existing_dir(tmp_path / "best") is None


def test_the_set_aside_folder_survives_a_failed_rewrite(tmp_path: Path) -> None:
    """Until a new folder is in place, the old one must stay findable."""
    retired = kill_between_the_renames(tmp_path)
    with pytest.raises(Boom), staged_dir(tmp_path / "best"):
        assert existing_dir(tmp_path / "best") == retired
        raise Boom
    assert existing_dir(tmp_path / "best") == retired
    assert (retired / "weights").read_text() == "old"


def test_a_successful_rewrite_after_a_kill_replaces_the_set_aside_folder(tmp_path: Path) -> None:
    kill_between_the_renames(tmp_path)
    with staged_dir(tmp_path / "best") as staging:
        (staging / "weights").write_text("new")
    assert existing_dir(tmp_path / "best") == tmp_path / "best"
    assert (tmp_path / "best" / "weights").read_text() == "new"
    assert names(tmp_path) == {"best"}
