"""All-or-nothing writes: folder swaps, staged files, the recovery of every state a kill can leave, and the
final files' permissions (the umask's, whatever the staging used)."""
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from bertfast import atomic
from bertfast.atomic import OLD, TMP, current_umask, recover_directory, replacing_directory, staged_files
from tests.helpers import assert_umask_modes

UMASKS = pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], indirect=True, ids=["022", "027", "077"])


def write_folder(path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)


def read_folder(path) -> dict[str, str]:
    return {name: (path / name).read_text() for name in sorted(os.listdir(path))}


def test_a_new_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "ckpt"
    write_folder(target, {"a": "old", "stale": "old"})
    with replacing_directory(target) as new:
        assert os.path.dirname(new) == str(tmp_path) and os.path.basename(new).startswith("ckpt" + TMP)
        assert read_folder(target) == {"a": "old", "stale": "old"}  # untouched while the new one is written
        (tmp_path / os.path.basename(new) / "a").write_text("new")
    assert read_folder(target) == {"a": "new"}
    assert os.listdir(tmp_path) == ["ckpt"]  # no leftovers beside it


def test_a_failed_write_leaves_the_old_folder_and_no_leftovers(tmp_path):
    target = tmp_path / "ckpt"
    write_folder(target, {"a": "old"})
    with pytest.raises(OSError, match="disk full"):
        with replacing_directory(target) as new:
            (tmp_path / os.path.basename(new) / "a").write_text("half")
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
        (tmp_path / os.path.basename(new) / "model.onnx").write_text("new")
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
    ("killed_after_the_old_was_moved_aside", {"a": "new"}, "kept the new version"),
    ("killed_before_the_old_was_deleted", {"a": "new"}, None),
    ("new_folder_lost_after_the_old_was_moved_aside", {"a": "old"}, "kept the previous version"),
])
def test_recovery_of_each_interrupted_swap(tmp_path, state, expected, warning):
    """The states a kill can leave between the steps of ``_swap``: either version comes back whole."""
    target, old, new = tmp_path / "ckpt", tmp_path / f"ckpt{OLD}x1", tmp_path / f"ckpt{TMP}x1"
    if state == "killed_while_writing":
        write_folder(target, {"a": "old"})
        write_folder(new, {"a": "ha"})
    elif state == "killed_after_the_old_was_moved_aside":
        write_folder(old, {"a": "old"})
        write_folder(new, {"a": "new"})
    elif state == "killed_before_the_old_was_deleted":
        write_folder(target, {"a": "new"})
        write_folder(old, {"a": "old"})
    else:
        write_folder(old, {"a": "old"})
    if warning:
        with pytest.warns(UserWarning, match=warning):
            recover_directory(target)
    else:
        recover_directory(target)
    assert read_folder(target) == expected and os.listdir(tmp_path) == ["ckpt"]


def test_staged_files_replace_files_one_by_one_and_keep_the_others(tmp_path):
    write_folder(tmp_path / "m", {"config.json": "old", "vocab.txt": "mine"})
    with staged_files(tmp_path / "m") as staging:
        assert os.path.dirname(staging) == str(tmp_path / "m")
        for name in ("config.json", "model.safetensors"):
            (tmp_path / "m" / os.path.basename(staging) / name).write_text("new")
    assert read_folder(tmp_path / "m") == {"config.json": "new", "model.safetensors": "new", "vocab.txt": "mine"}
    with pytest.raises(OSError):
        with staged_files(tmp_path / "m") as staging:
            (tmp_path / "m" / os.path.basename(staging) / "config.json").write_text("half")
            raise OSError("disk full")
    assert read_folder(tmp_path / "m")["config.json"] == "new" and len(os.listdir(tmp_path / "m")) == 3


def test_staged_files_clean_up_what_a_kill_left(tmp_path):
    write_folder(tmp_path / "m" / f"{TMP}dead", {"config.json": "half"})
    with pytest.warns(UserWarning, match="an unfinished save"):
        with staged_files(tmp_path / "m") as staging:
            (tmp_path / "m" / os.path.basename(staging) / "config.json").write_text("new")
    assert read_folder(tmp_path / "m") == {"config.json": "new"}


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
        (tmp_path / "model" / os.path.basename(staging) / "config.json").write_text("{}")
    assert_umask_modes(directory, umask)
    private_file(directory / "notes.txt")
    with staged_files(directory) as staging:
        private_file(os.path.join(staging, "config.json"))
    assert mode(directory / "config.json") == 0o666 & ~umask and mode(directory / "notes.txt") == 0o600


def test_a_swap_completed_by_recovery_has_the_final_modes(tmp_path, umask):
    """A kill between the two renames of the swap: the new folder that recovery moves in had its modes already."""
    target = tmp_path / "ckpt"
    write_folder(target, {"a": "old"})
    pid = os.fork()
    if pid == 0:  # the writer, killed as it renames the new folder into place
        try:
            rename = os.rename
            os.rename = lambda source, dest: os._exit(0) if TMP in source else rename(source, dest)
            with replacing_directory(target) as new:
                private_file(os.path.join(new, "a"), "new")
        finally:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    with pytest.warns(UserWarning, match="kept the new version"):
        recover_directory(target)
    assert read_folder(target) == {"a": "new"}
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
