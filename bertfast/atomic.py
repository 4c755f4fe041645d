"""All-or-nothing saves: what bertfast saves is written beside its target and put in place by renames, so a crash,
a kill or a full disk leaves the previous version whole or the new one, never a mix and nothing half-written.

One save is one swap of the folder (or file) it writes. Readers other than bertfast's (transformers, Triton) read
files by name and would ignore a manifest or commit marker inside the folder, so the set of files itself is
swapped: every reader then finds one version whole. The new version is written into a work folder beside the
target (``bertfast.atomic_recovery``: its layout, what a kill leaves there, and the recovery by writers and
readers), then swapped in by two renames: ``target`` -> ``work/old`` (not on a first save) and ``work/new`` ->
``target``.

- ``replacing_directory(target, owned)``: a folder swapped in whole (checkpoints, exports, Triton models).
  ``owned``: the names the writer owns; the old folder's other entries (the user's) are carried into the new
  one (hard links: no copy, same inodes) before the swap, and the folder keeps its mode.
- ``staged_files(directory)``: files replacing their namesakes in a folder of the user's (``save_pretrained``,
  the tokenizer's): the same swap, every other entry carried over, so the files of one save change together.
- ``replacing_file(path)``: one file, put in place by one rename (a cache).

Each first runs ``recover_directory`` on its target; readers call ``current_version`` (both re-exported here).

Final files and folders get the permissions a plain ``open()`` / ``mkdir()`` would give under the process
umask (``finalize_modes``; 0644 / 0755 under umask 022), set before the new version is marked complete: the work
folder is private (mkdtemp: 0700) and so are files some libraries write (safetensors: 0600) until then. Entries
carried over from the old folder keep their modes (hard links share the user's inode).

Limits: one writer per target at a time; a reader reading a folder's files while a save swaps it may get one
file of each version (the swap guards against kills, not concurrent saves); entries added to a folder between
the carry-over and the swap are lost; a writer on another host (a shared filesystem) counts as gone; the working
directory, or a folder holding it, is never swapped (the process would be left in a deleted folder): refused.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator

from bertfast.atomic_recovery import (COMPLETE, MARKER, MARKER_FORMAT, NEW, OLD, WORK, current_version,
                                      recover_directory, recover_entries, remove_work, step)

__all__ = ["current_umask", "current_version", "finalize_modes", "recover_directory", "recover_entries",
           "replacing_directory", "replacing_file", "staged_files"]

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
    """Flush a file's data, or a folder's entries, to the disk (so a power loss after the rename cannot leave it
    empty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    if not os.path.isdir(path):
        _fsync(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


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


def _make_work(target: str) -> str:
    """A new private work folder beside ``target``, its marker written."""
    parent, name = os.path.split(target)
    work = tempfile.mkdtemp(prefix=f".{name}{WORK}{os.getpid()}-", dir=parent)
    try:
        with open(os.path.join(work, MARKER), "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": MARKER_FORMAT, "target": name, "pid": os.getpid(),
                                "host": socket.gethostname()}))
    except BaseException:
        remove_work(work)
        raise
    step()
    return work


def _mark_complete(work: str) -> None:
    """``work/new`` is whole: from now on a kill that leaves the target missing keeps ``new``."""
    _fsync_tree(os.path.join(work, NEW))
    with open(os.path.join(work, COMPLETE), "w", encoding="utf-8"):
        pass
    _fsync(work)
    step()


def _check_not_a_file(target: str) -> None:
    if os.path.lexists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target} is a file; the output path is a directory")


def _check_replaceable(target: str) -> None:
    _check_not_a_file(target)
    cwd = os.getcwd()
    if cwd == target or cwd.startswith(target + os.sep):
        raise ValueError(f"{target} is the working directory or holds it: write to a new folder instead of "
                         f"replacing the one you are in")


def _swap(work: str, target: str) -> None:
    """``target`` -> ``work/old`` (when it exists), ``work/new`` -> ``target``; on an error the old one back."""
    new, old = os.path.join(work, NEW), os.path.join(work, OLD)
    moved = os.path.lexists(target)
    if moved:
        os.rename(target, old)
        step()
    try:
        os.rename(new, target)
    except BaseException:
        if moved:
            os.rename(old, target)
        raise
    step()


def check_out_dir(path: str | os.PathLike, overwrite: bool, refusal: Callable[[str, list[str]], str],
                  resume: str | os.PathLike | None = None, only_files: bool = False) -> str:
    """Check, before the work, that a save may later swap in folder ``path`` (its interrupted saves recovered
    first): a new or empty folder, the folder ``resume`` names, or with ``overwrite`` one that holds entries (with
    ``only_files``: files only, as a checkpoint does). Otherwise a FileExistsError: ``refusal(path, entries)`` is
    its message for a folder that holds entries (what it holds and the fix). Returns ``path``."""
    path = os.fspath(path)
    recover_directory(path)
    _check_not_a_file(path)
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if not entries or (resume is not None and os.path.isdir(resume) and os.path.samefile(path, resume)):
        return path
    folders = [name for name in entries if os.path.isdir(os.path.join(path, name))]
    if overwrite and only_files and folders:
        raise FileExistsError(f"{path} holds folders ({', '.join(folders)}), which overwrite (--overwrite) never "
                              f"replaces: choose a new folder")
    if not overwrite:
        raise FileExistsError(refusal(path, entries))
    return path


@contextlib.contextmanager
def replacing_directory(target: str | os.PathLike, owned: Collection[str] | None = None) -> Iterator[str]:
    """Yield a new empty folder; when the block succeeds it replaces ``target`` in one swap. If the block raises,
    or the process dies, ``target`` is left as it was (after a kill: once recovered).

    ``owned``: the entry names the writer owns in ``target``. None: all of them (the old folder is dropped
    whole). Otherwise the old folder's other entries are carried into the new one (hard links) before the swap,
    and the new folder takes the old one's mode. A symlink ``target`` is followed: the folder it names is swapped.
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.islink(target):
        target = os.path.realpath(target)
    _check_replaceable(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    recover_directory(target)
    work = _make_work(target)
    new = os.path.join(work, NEW)
    try:
        os.mkdir(new, 0o700)
        yield new
        step()
        finalize_modes(new)  # before the carry-over: what the user had keeps its modes
        if owned is not None and os.path.isdir(target):
            _carry_over(target, new, owned)
            os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))  # the user's folder keeps its mode
        _mark_complete(work)
        _swap(work, target)
    except BaseException:
        if os.path.lexists(target) or not os.path.lexists(os.path.join(work, OLD)):
            remove_work(work)
        raise
    remove_work(work)
    step()


@contextlib.contextmanager
def staged_files(directory: str | os.PathLike) -> Iterator[str]:
    """Yield a staging folder; when the block succeeds, what was written into it replaces its namesakes in
    ``directory`` (created if needed) in one swap of the folder, whose other entries are carried over: all the
    files of the save change together, or none. If the block raises, or the process dies, ``directory`` keeps its
    old files (after a kill: once recovered)."""
    with replacing_directory(directory, owned=()) as staging:
        yield staging


@contextlib.contextmanager
def replacing_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a path to write one file at; when the block succeeds the file replaces ``path`` in one rename. If the
    block raises, or the process dies, ``path`` is left as it was."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; replacing_file writes one file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    recover_directory(path)
    work = _make_work(path)
    new = os.path.join(work, NEW)
    try:
        yield new
        step()
        finalize_modes(new)
        _mark_complete(work)
        os.replace(new, path)
        step()
    finally:
        remove_work(work)
    step()
