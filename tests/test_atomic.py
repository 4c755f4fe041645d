"""All-or-nothing saves: folder swaps, staged files and single files, killed at every step boundary; the
recovery of every state a kill can leave, by writers and by readers that may not rename; only bertfast's own
entries ever removed; and the final files' permissions (the umask's, whatever the staging used)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import pytest

from bertfast import atomic
from bertfast.atomic import (current_umask, current_version, recover_directory, recover_entries, replacing_directory,
                             replacing_file, staged_files)
from bertfast.atomic_recovery import COMPLETE, MARKER, MARKER_FORMAT, NEW, OLD, SWAP_WAIT_S, WORK
from tests.helpers import assert_umask_modes
from tests.kills import killed_after_each_step, read_only_renames

UMASKS = pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], indirect=True, ids=["022", "027", "077"])


def write_folder(path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)


def read_folder(path) -> dict[str, str | None]:
    """name -> text of each file in ``path`` (None for a folder)."""
    path = pathlib.Path(path)
    return {name: None if (path / name).is_dir() else (path / name).read_text() for name in sorted(os.listdir(path))}


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def work_folder(target, pid: int, new: dict[str, str] | None = None, old: dict[str, str] | None = None,
                complete: bool = False, name: str = "k1"):
    """A work folder as a writer of ``target`` leaves it (``pid``: its writer)."""
    work = target.parent / f".{target.name}{WORK}{name}"
    write_folder(work, {MARKER: json.dumps({"format": MARKER_FORMAT, "target": target.name, "pid": pid,
                                            "host": socket.gethostname()})})
    if new is not None:
        write_folder(work / NEW, new)
    if old is not None:
        write_folder(work / OLD, old)
    if complete:
        (work / COMPLETE).write_text("")
    return work


def test_a_new_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "ckpt"
    write_folder(target, {"a": "old", "stale": "old"})
    with replacing_directory(target) as new:
        work = os.path.dirname(new)
        assert os.path.dirname(work) == str(tmp_path) and os.path.basename(work).startswith(".ckpt" + WORK)
        assert read_folder(target) == {"a": "old", "stale": "old"}  # untouched while the new one is written
        with open(os.path.join(new, "a"), "w") as f:
            f.write("new")
    assert read_folder(target) == {"a": "new"}
    assert os.listdir(tmp_path) == ["ckpt"]  # no leftovers beside it


def test_a_failed_write_leaves_the_old_folder_and_no_leftovers(tmp_path):
    target = tmp_path / "ckpt"
    write_folder(target, {"a": "old"})
    with pytest.raises(OSError, match="disk full"):
        with replacing_directory(target) as new:
            with open(os.path.join(new, "a"), "w") as f:
                f.write("half")
            raise OSError("disk full")
    assert read_folder(target) == {"a": "old"} and os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(OSError):
        with replacing_directory(tmp_path / "fresh"):
            raise OSError("disk full")
    assert os.listdir(tmp_path) == ["ckpt"]  # a failed first write leaves nothing at all


def test_entries_the_writer_does_not_own_are_carried_over(tmp_path):
    target = tmp_path / "export"
    write_folder(target, {"model.onnx": "old", "notes.txt": "mine"})
    write_folder(target / "extra", {"x": "kept"})
    with replacing_directory(target, owned=("model.onnx", "vocab.txt")) as new:
        with open(os.path.join(new, "model.onnx"), "w") as f:
            f.write("new")
    assert sorted(os.listdir(target)) == ["extra", "model.onnx", "notes.txt"] and os.listdir(tmp_path) == ["export"]
    assert (target / "model.onnx").read_text() == "new" and (target / "notes.txt").read_text() == "mine"
    assert (target / "extra" / "x").read_text() == "kept"


def test_refuses_a_file_and_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        with replacing_directory(tmp_path / "file"):
            pass
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for target in (work, tmp_path):
        with pytest.raises(ValueError, match="is the working directory or holds it"):
            with replacing_directory(target):
                pass


@pytest.mark.parametrize("state, expected, warning", [
    ("killed_while_writing", {"a": "old"}, "removed .*an unfinished save"),
    ("killed_before_the_swap", {"a": "old"}, "removed .*an unfinished save"),
    ("killed_after_the_old_was_moved_aside", {"a": "new"}, "kept the new version"),
    ("killed_before_the_work_folder_was_deleted", {"a": "new"}, None),
    ("new_folder_lost_after_the_old_was_moved_aside", {"a": "old"}, "kept the previous version"),
    ("first_save_killed_before_its_rename", {"a": "new"}, "kept the new version"),
    ("first_save_killed_while_writing", None, "an unfinished first save"),
])
def test_recovery_of_each_interrupted_swap(tmp_path, state, expected, warning):
    """The states a kill can leave between the steps of a swap: either version comes back whole."""
    target, pid = tmp_path / "ckpt", dead_pid()
    if state == "killed_while_writing":
        write_folder(target, {"a": "old"})
        work_folder(target, pid, new={"a": "ha"})
    elif state == "killed_before_the_swap":
        write_folder(target, {"a": "old"})
        work_folder(target, pid, new={"a": "new"}, complete=True)
    elif state == "killed_after_the_old_was_moved_aside":
        work_folder(target, pid, new={"a": "new"}, old={"a": "old"}, complete=True)
    elif state == "killed_before_the_work_folder_was_deleted":
        write_folder(target, {"a": "new"})
        work_folder(target, pid, old={"a": "old"}, complete=True)
    elif state == "new_folder_lost_after_the_old_was_moved_aside":
        work_folder(target, pid, old={"a": "old"}, complete=True)
    elif state == "first_save_killed_before_its_rename":
        work_folder(target, pid, new={"a": "new"}, complete=True)
    else:
        work_folder(target, pid, new={"a": "ha"})
    if warning:
        with pytest.warns(UserWarning, match=warning):
            recover_directory(target)
    else:
        recover_directory(target)
    assert os.listdir(tmp_path) == ([] if expected is None else ["ckpt"])
    assert expected is None or read_folder(target) == expected


def test_only_bertfast_s_own_entries_are_ever_removed(tmp_path):
    """A user's ``.tmp-*`` and ``*.old-*`` entries, a work-like folder without a marker, one whose marker names
    another target, and the work folder of a writer still running all survive every save and recovery."""
    target = tmp_path / "m"
    write_folder(target, {"config.json": "old"})
    write_folder(target / ".tmp-my-notes", {"important.txt": "mine"})
    write_folder(tmp_path / "m.old-backup", {"x": "mine"})
    write_folder(tmp_path / "m.tmp-draft", {"x": "mine"})
    write_folder(tmp_path / f".m{WORK}nomarker", {"x": "mine"})
    other = work_folder(tmp_path / "m2", dead_pid(), new={"a": "x"}, name="zz")
    other.rename(tmp_path / f".m{WORK}zz")  # a marker naming m2, under a name that looks like m's
    live = work_folder(target, os.getpid(), new={"config.json": "half"}, name="live")
    before = sorted(os.listdir(tmp_path))
    with staged_files(target) as staging:
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write("new")
    recover_directory(target)
    assert sorted(os.listdir(tmp_path)) == before and live.exists()
    assert sorted(os.listdir(target)) == [".tmp-my-notes", "config.json"] and (target / "config.json").read_text() == "new"
    assert (target / ".tmp-my-notes" / "important.txt").read_text() == "mine"


def read_as_readers(target, monkeypatch) -> dict[str, str]:
    """What a reader that may not rename reads (the whole version where it lies, with a warning when the target is
    missing), checked equal to what a reader that may rename reads (it finishes the swap); then a writer's
    recovery clears the rest."""
    missing = not os.path.lexists(target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monkeypatch.context() as m:
            read_only_renames(m)
            found = current_version(target)
            in_place = read_folder(found) if os.path.isdir(found) else {"": open(found).read()}
        assert (found != str(target)) == missing
        assert any("reading its whole version" in str(w.message) for w in caught) == missing
        found = current_version(target)
        assert found == str(target)
        assert (read_folder(target) if os.path.isdir(target) else {"": target.read_text()}) == in_place
        recover_directory(target)
    return in_place


def test_a_work_folder_killed_before_its_marker_was_whole_is_removed_once_its_writer_is_gone(tmp_path):
    target, gone = tmp_path / "ckpt", dead_pid()
    write_folder(tmp_path / f".ckpt{WORK}{gone}-empty", {})
    write_folder(tmp_path / f".ckpt{WORK}{gone}-half", {MARKER: '{"format": "bert'})
    write_folder(tmp_path / f".ckpt{WORK}{gone}-mine", {"notes.txt": "a user's file"})
    write_folder(tmp_path / f".ckpt{WORK}{os.getpid()}-running", {})
    recover_directory(target)
    assert set(os.listdir(tmp_path)) == {f".ckpt{WORK}{gone}-mine", f".ckpt{WORK}{os.getpid()}-running"}


def test_every_step_of_a_swap_killed_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    old, new = {"a": "old", "b": "old", "notes": "mine"}, {"a": "new", "b": "new", "notes": "mine"}

    def reset():
        shutil.rmtree(tmp_path)
        write_folder(target, old)

    def write():
        with replacing_directory(target, owned=("a", "b")) as folder:
            for name in ("a", "b"):
                with open(os.path.join(folder, name), "w") as f:
                    f.write("new")

    seen = []
    for killed in killed_after_each_step(write, reset):
        found = read_as_readers(target, monkeypatch)
        assert found in (old, new) and os.listdir(tmp_path) == ["ckpt"]
        seen.append("old" if found == old else "new")
    # marker, written, complete | old moved aside (the target missing) | new moved in, work folder emptied but for
    # its marker, then gone | unkilled
    assert seen == ["old", "old", "old", "new", "new", "new", "new", "new"] and not killed


def test_every_step_of_a_staged_save_killed_leaves_the_old_or_the_new_files(tmp_path, monkeypatch):
    target = tmp_path / "m"
    old = {"config.json": "old", "model.safetensors": "old", "vocab.txt": "mine"}
    new = {"config.json": "new", "model.safetensors": "new", "vocab.txt": "mine"}

    def reset():
        shutil.rmtree(tmp_path)
        write_folder(target, old)
        write_folder(target / ".tmp-my-notes", {"important.txt": "mine"})

    def write():
        with staged_files(target) as staging:
            for name in ("config.json", "model.safetensors"):
                with open(os.path.join(staging, name), "w") as f:
                    f.write("new")

    seen = set()
    for killed in killed_after_each_step(write, reset):
        found = read_as_readers(target, monkeypatch)
        assert found in ({**old, ".tmp-my-notes": None}, {**new, ".tmp-my-notes": None})
        assert (target / ".tmp-my-notes" / "important.txt").read_text() == "mine"
        assert os.listdir(tmp_path) == ["m"]
        seen.add(found["config.json"])
    assert seen == {"old", "new"} and not killed


def test_every_step_of_a_file_replacement_killed_leaves_the_old_or_the_new_file(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"

    def reset():
        shutil.rmtree(tmp_path)
        tmp_path.mkdir()
        path.write_text("old")

    def write():
        with replacing_file(path) as staged:
            with open(staged, "w") as f:
                f.write("new")

    seen = []
    for killed in killed_after_each_step(write, reset):
        seen.append(read_as_readers(path, monkeypatch)[""])
        assert os.listdir(tmp_path) == ["cache.json"]
    assert seen == ["old", "old", "old", "new", "new", "new", "new"] and not killed


def test_a_reader_waits_for_a_live_writer_s_swap_and_recovery_leaves_it_alone(tmp_path):
    """The target missing between a running writer's two renames: the reader waits for the second one rather than
    finishing the swap under the writer."""
    target = tmp_path / "ckpt"
    work = work_folder(target, os.getpid(), new={"a": "new"}, old={"a": "old"}, complete=True)
    recover_directory(target)  # a writer's recovery: a live writer's folder is not touched
    assert not target.exists() and (work / NEW).exists()
    threading.Timer(0.2, lambda: os.rename(work / NEW, target)).start()
    start = time.monotonic()
    assert current_version(target) == str(target) and 0.1 < time.monotonic() - start < SWAP_WAIT_S
    assert read_folder(target) == {"a": "new"}


def test_a_writer_that_cannot_finish_a_swap_names_the_whole_version(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    work = work_folder(target, dead_pid(), new={"a": "new"}, old={"a": "old"}, complete=True)
    read_only_renames(monkeypatch)
    with pytest.raises(PermissionError, match=f"its whole \\(new\\) version {work / NEW} cannot be moved into place"):
        recover_directory(target)


def test_recover_entries_finishes_every_model_of_a_repository(tmp_path):
    repo = tmp_path / "repo"
    work_folder(repo / "a", dead_pid(), new={"config.pbtxt": "new"}, old={"config.pbtxt": "old"}, complete=True)
    write_folder(repo / "b", {"config.pbtxt": "old"})
    work_folder(repo / "b", dead_pid(), new={"config.pbtxt": "half"})
    write_folder(repo / ".tmp-mine", {"x": "mine"})
    with pytest.warns(UserWarning):
        recover_entries(repo)
    assert sorted(os.listdir(repo)) == [".tmp-mine", "a", "b"]
    assert read_folder(repo / "a") == {"config.pbtxt": "new"} and read_folder(repo / "b") == {"config.pbtxt": "old"}


def private_file(path, text: str = "x") -> None:
    """A file as mkstemp or safetensors write it: mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@UMASKS
def test_a_swapped_in_folder_gets_the_umask_modes_and_carried_over_entries_keep_theirs(tmp_path, umask):
    target = tmp_path / "export"
    write_folder(target, {"model.onnx": "old"})
    private_file(target / "notes.txt", "mine")  # the user's, carried over: a hard link to their inode
    (target / "private").mkdir(mode=0o700)
    private_file(tmp_path / "outside", "elsewhere")
    with replacing_directory(target, owned=("model.onnx", "sub")) as new:
        assert mode(new) == 0o700  # private while it is written
        private_file(os.path.join(new, "model.onnx"))
        os.mkdir(os.path.join(new, "sub"), 0o700)
        fd, _ = tempfile.mkstemp(dir=os.path.join(new, "sub"))
        os.close(fd)
        os.symlink(tmp_path / "outside", os.path.join(new, "sub", "link"))
    assert_umask_modes(target / "model.onnx", umask)
    assert_umask_modes(target / "sub", umask)
    assert mode(target) == 0o777 & ~umask
    assert mode(target / "notes.txt") == 0o600 and mode(target / "private") == 0o700
    assert mode(tmp_path / "outside") == 0o600  # a symlink's target is never changed


@UMASKS
def test_staged_files_get_the_umask_modes_and_the_folder_s_other_files_keep_theirs(tmp_path, umask):
    directory = tmp_path / "model"
    with staged_files(directory) as staging:
        assert mode(staging) == 0o700
        private_file(os.path.join(staging, "model.safetensors"))
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write("{}")
    assert_umask_modes(directory, umask)
    private_file(directory / "notes.txt")
    os.chmod(directory, 0o750)  # the user's folder keeps its own mode
    with staged_files(directory) as staging:
        private_file(os.path.join(staging, "config.json"))
    assert mode(directory / "config.json") == 0o666 & ~umask and mode(directory / "notes.txt") == 0o600
    assert mode(directory) == 0o750


def test_a_swap_completed_by_recovery_has_the_final_modes(tmp_path, umask):
    """A kill between the two renames of the swap: the new folder that recovery moves in had its modes already."""
    target = tmp_path / "ckpt"

    def write():
        with replacing_directory(target) as new:
            private_file(os.path.join(new, "a"), "new")

    for killed in killed_after_each_step(write, lambda: write_folder(target, {"a": "old"})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recover_directory(target)
        assert_umask_modes(target, umask)


@UMASKS
def test_the_umask_is_read_from_proc_or_else_set_and_restored(umask, monkeypatch):
    assert current_umask() == umask
    monkeypatch.setattr(atomic, "PROC_STATUS", "/nonexistent/status")  # no /proc: set and restored, once
    atomic._swapped_umask.cache_clear()
    try:
        assert current_umask() == umask and os.umask(umask) == umask  # restored
    finally:
        atomic._swapped_umask.cache_clear()
