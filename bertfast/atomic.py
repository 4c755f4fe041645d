"""All-or-nothing writes: what bertfast saves is written under a temporary name beside its target and renamed
into place, so a crash, a kill or a full disk leaves the previous version whole and nothing half-written.

- ``staged_files(directory)``: files written into a staging folder (``directory/.tmp-<id>``), then each
  renamed into ``directory`` (one rename per file: every file is old or new, never truncated). For
  ``save_pretrained``, which adds its files to a folder that may hold others.
- ``replacing_directory(target)``: a whole folder written beside ``target`` and swapped in, so the folder is
  old or new as a whole. For checkpoints and exports. The swap is three renames:
  ``target.tmp-<id>`` (the new folder, written) -> ``target`` after ``target`` -> ``target.old-<id>``; then
  the old folder is deleted.
- ``recover_directory(target)``: finishes or undoes a swap a kill interrupted, and deletes unfinished writes.
  Both writers call it first. A ``target.old-<id>`` without ``target`` means the kill fell between the two
  renames: ``target.tmp-<id>`` (same id) is complete then, because the old folder is only moved aside once
  the new one is written, so it is moved in; without it, the old folder is moved back. Any other
  ``target.tmp-*`` is an unfinished write and is deleted.

Final files and folders get the permissions a plain ``open()`` / ``mkdir()`` would give under the process
umask (``finalize_modes``; 0644 / 0755 under umask 022), set just before the rename: the staging folder is
private (mkdtemp: 0700) and so are files some libraries write (safetensors: 0600) until then. Entries carried
over from the old folder keep their modes (hard links share the user's inode).

One writer per target at a time: a second writer's recovery would delete the first one's unfinished folder.
Renames within one folder are atomic on POSIX (and on Windows for files; folders are only renamed onto
names that do not exist).
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Collection, Iterator

TMP = ".tmp-"  # beside the target: a version being written
OLD = ".old-"  # beside the target: the previous version, moved aside during a swap
PROC_STATUS = "/proc/self/status"  # Linux: its "Umask:" line shows the umask without changing it


def current_umask() -> int:
    """The process umask: read from /proc/self/status where Linux has it (no change, so no race with threads
    creating files), else set and restored once and cached (a later change of the umask is not seen there)."""
    try:
        with open(PROC_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return _swapped_umask()


@functools.cache
def _swapped_umask() -> int:
    old = os.umask(0o022)  # for that moment, the usual umask rather than none
    os.umask(old)
    return old


def finalize_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the modes a plain ``open()`` / ``mkdir()`` would
    have given it under the umask: files 0o666 & ~umask, folders 0o777 & ~umask. Symlinks are never followed
    and, like other special files, left alone. Run on a staged file or folder before it is renamed into place
    (while it is still private, so no other user can swap an entry in between)."""
    mask = current_umask()

    def finalize(entry: str) -> None:
        mode = os.lstat(entry).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(entry, 0o777 & ~mask)
        elif stat.S_ISREG(mode):
            os.chmod(entry, 0o666 & ~mask)

    path = os.fspath(path)
    finalize(path)
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):  # does not enter symlinked folders
            for name in dirs + files:
                finalize(os.path.join(root, name))


def _fsync(path: str) -> None:
    """Flush a file's data to the disk (so a power loss after the rename cannot leave it empty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: str) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            _fsync(os.path.join(root, name))


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (instant, no space) where the filesystem allows it, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _carry_over(old: str, new: str, owned: Collection[str]) -> None:
    """Entries of the old folder that the writer does not own (and did not write) into the new one."""
    for name in os.listdir(old):
        source, target = os.path.join(old, name), os.path.join(new, name)
        if name in owned or os.path.lexists(target):
            continue
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)


def _leftovers(target: str, kind: str) -> dict[str, str]:
    """id -> path of the ``target.tmp-<id>`` / ``target.old-<id>`` entries beside ``target``."""
    parent, name = os.path.split(target)
    prefix = name + kind
    return {entry[len(prefix):]: os.path.join(parent, entry) for entry in os.listdir(parent or ".")
            if entry.startswith(prefix)}


def recover_directory(target: str | os.PathLike) -> None:
    """Finish or undo an interrupted swap of ``target`` and delete unfinished writes beside it (see the module
    docstring), each with a warning. Nothing happens when there are no leftovers."""
    target = os.path.abspath(os.fspath(target))
    if not os.path.isdir(os.path.dirname(target)):
        return
    unfinished = _leftovers(target, TMP)
    for key, old in sorted(_leftovers(target, OLD).items()):
        if not os.path.lexists(target):
            source = unfinished.pop(key, None) or old
            os.rename(source, target)
            warnings.warn(f"{target}: completed a save that was interrupted (kept the "
                          f"{'new' if source != old else 'previous'} version)")
        if os.path.lexists(old):
            shutil.rmtree(old, ignore_errors=True)
    for path in unfinished.values():
        shutil.rmtree(path, ignore_errors=True)
        warnings.warn(f"removed {path}: an unfinished save (the process writing it was stopped)")


def _check_not_a_file(target: str) -> None:
    if os.path.lexists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target} is a file; the output path is a directory")


def _check_replaceable(target: str) -> None:
    _check_not_a_file(target)
    cwd = os.getcwd()
    if cwd == target or cwd.startswith(target + os.sep):
        raise ValueError(f"{target} is the working directory or holds it: write to a new folder instead of "
                         f"replacing the one you are in")


@contextlib.contextmanager
def replacing_directory(target: str | os.PathLike, owned: Collection[str] | None = None) -> Iterator[str]:
    """Yield a new empty folder beside ``target``; when the block succeeds it replaces ``target`` in one swap.
    If the block raises, or the process dies, ``target`` is left as it was.

    ``owned``: the entry names the writer owns in ``target``. None: all of them (the old folder is dropped
    whole). Otherwise the old folder's other entries are carried into the new one (hard links) before the swap.
    """
    target = os.path.abspath(os.fspath(target))
    _check_replaceable(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    recover_directory(target)
    new = tempfile.mkdtemp(prefix=name + TMP, dir=parent)
    try:
        yield new
        finalize_modes(new)  # before the carry-over: what the user had keeps its modes
        if owned is not None and os.path.isdir(target):
            _carry_over(target, new, owned)
        _fsync_tree(new)
        _swap(new, target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _swap(new: str, target: str) -> None:
    old = target + OLD + new.rsplit(TMP, 1)[1]
    moved = os.path.isdir(target)
    if moved:
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if moved:
            os.rename(old, target)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_files(directory: str | os.PathLike) -> Iterator[str]:
    """Yield a staging folder inside ``directory`` (created if needed); when the block succeeds, each file
    written into it is renamed into ``directory`` (replacing a file of that name). If the block raises, or the
    process dies, ``directory`` keeps its old files; the staging folder is removed (after a kill: by the next
    write into ``directory``)."""
    directory = os.path.abspath(os.fspath(directory))
    _check_not_a_file(directory)
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):
        if entry.startswith(TMP):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
            warnings.warn(f"removed {os.path.join(directory, entry)}: an unfinished save (the process writing it "
                          f"was stopped)")
    staging = tempfile.mkdtemp(prefix=TMP, dir=directory)
    try:
        yield staging
        names = sorted(os.listdir(staging))
        for name in names:
            if os.path.isdir(os.path.join(staging, name)):
                raise IsADirectoryError(f"staged_files moves files only; {name} is a folder")
            finalize_modes(os.path.join(staging, name))
            _fsync(os.path.join(staging, name))
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
