"""The work folders of ``bertfast.atomic``'s saves: what a kill leaves in them, and how writers and readers
recover the whole version from it.

A save of ``<name>`` works in ``.<name>.bertfast-<pid>-<random>/`` (``WORK``) beside it: first its marker
``bertfast-save.json`` (the proof bertfast made the folder: the target's name, the writer's pid and host), then
``new`` (the new folder or file), then the empty file ``complete`` once ``new`` is whole (written, its modes set,
its data flushed); the swap is ``target`` -> ``old`` (not on a first save) and ``new`` -> ``target``; then the
folder is deleted, its marker last. The state a kill leaves says which version is whole. ``target`` there: it
is (the swap had not started, or it had ended). ``target`` missing (the kill fell between the two renames, or
before a first save's only one): ``new`` if ``complete`` is there (``target`` is only moved aside after that),
else ``old`` (none: an unfinished first save).

- ``recover_directory(target)``: writers call it first. The work folders of ``target`` whose writer is gone (no
  process of that pid on this host) are finished or undone so, with a warning; a live writer's are left alone.
  Where the whole version cannot be moved into place (no write permission), the ``OSError`` names it.
- ``current_version(path)``: readers call it (``bertfast.hub`` for every local file, ``OnnxModel``, ``--resume``).
  It gives the path to read: ``path`` when it is there (one ``lexists``), once a live writer's swap has ended,
  or once a dead writer's is finished; where it cannot rename, the whole version where it lies (with a warning).
- ``recover_entries(directory)``: ``recover_directory`` for each entry of a folder (``TritonServer``'s repository).

Only entries bertfast made are ever removed: a work folder counts only with a valid marker naming its target
(a user's ``.tmp-notes`` or ``ckpt.old-backup`` is never touched), or, when a kill fell before its marker was
whole, with nothing in it but that file and a gone writer's pid in its name.

Test-only seam: with ``BERTFAST_ATOMIC_KILL_AFTER_STEP=N`` in its environment, a process SIGKILLs itself right
after the Nth step of its saves (counted over all of them: ``step``), so that tests stop a writer at every step
boundary for certain. Unset (the default), it does nothing.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
import warnings
from typing import Any

WORK = ".bertfast-"  # .<name>.bertfast-<pid>-<random>: the work folder of a save of <name>, beside it
MARKER = "bertfast-save.json"  # inside the work folder, written first: {"format", "target", "pid", "host"}
MARKER_FORMAT = "bertfast-atomic-save-1"
NEW, OLD, COMPLETE = "new", "old", "complete"  # inside the work folder
KILL_AFTER_STEP = "BERTFAST_ATOMIC_KILL_AFTER_STEP"  # test-only: SIGKILL this process right after step N
SWAP_WAIT_S = 10.0  # how long a reader waits for a live writer's two renames to end

_steps_done = 0  # the steps of this process's saves, counted while KILL_AFTER_STEP is set


def step() -> None:
    """The test-only seam (module docstring): a step of a save is done; with ``KILL_AFTER_STEP`` = N set, the
    Nth one SIGKILLs this process. Unset, nothing happens."""
    global _steps_done
    limit = os.environ.get(KILL_AFTER_STEP)
    if limit:
        _steps_done += 1
        if _steps_done == int(limit):
            os.kill(os.getpid(), signal.SIGKILL)


def _read_marker(work: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(work, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def _work_folders(target: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(path, marker) of each work folder beside ``target`` (an absolute path) whose marker names it, and (path,
    None) of each one a kill left before its marker was whole (nothing in it but at most that file)."""
    parent, name = os.path.split(target)
    prefix = "." + name + WORK
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return []
    found = []
    for entry in entries:
        path = os.path.join(parent, entry)
        if entry.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path):
            marker = _read_marker(path)
            if marker is not None and marker.get("target") == name:
                found.append((path, marker))
            elif marker is None and entry[len(prefix):].split("-")[0].isdigit() and set(os.listdir(path)) <= {MARKER}:
                found.append((path, None))
    return found


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host has ``pid`` (a pid reused since counts as alive: the folder is then left
    alone, never finished wrongly)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _writer_alive(work: str, marker: dict[str, Any] | None) -> bool:
    """Whether the writer of a work folder may still run (its pid is in its name and its marker)."""
    if marker is None:
        return _pid_alive(int(os.path.basename(work).rsplit(WORK, 1)[1].split("-")[0]))
    pid = marker.get("pid")
    return marker.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0 and _pid_alive(pid)


def remove_work(work: str) -> None:
    """Delete a work folder, its marker last: a kill part way leaves it marked, or empty (module docstring). An
    entry that cannot be deleted stops it there (the folder stays marked)."""
    with contextlib.suppress(OSError):
        for name in (NEW, OLD, *sorted(set(os.listdir(work)) - {COMPLETE, NEW, OLD, MARKER}), COMPLETE):
            path = os.path.join(work, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        step()
        if os.path.lexists(os.path.join(work, MARKER)):
            os.remove(os.path.join(work, MARKER))
        os.rmdir(work)


def _whole_version(work: str) -> str | None:
    """The version to keep when the target is missing: ``new`` if complete, else the ``old`` moved aside."""
    new, old = os.path.join(work, NEW), os.path.join(work, OLD)
    if os.path.lexists(os.path.join(work, COMPLETE)) and os.path.lexists(new):
        return new
    return old if os.path.lexists(old) else None


def _recover(work: str, target: str) -> None:
    """Finish or undo the save a kill interrupted (module docstring), then delete its work folder."""
    if not os.path.lexists(target):
        source = _whole_version(work)
        if source is not None:
            which = "new" if os.path.basename(source) == NEW else "previous"
            try:
                os.rename(source, target)
            except OSError as e:
                raise OSError(e.errno, f"{target} is missing: a save of it was stopped between its renames, and its "
                                       f"whole ({which}) version {source} cannot be moved into place here "
                                       f"({e.strerror}): move it to {target}, or read it where it is") from e
            warnings.warn(f"{target}: completed a save that was interrupted (kept the {which} version)")
        else:
            warnings.warn(f"removed {work}: an unfinished first save of {target} (the process writing it was stopped)")
    elif os.path.lexists(os.path.join(work, NEW)):
        warnings.warn(f"removed {work}: an unfinished save of {target} (the process writing it was stopped; "
                      f"{target} is as it was)")
    remove_work(work)


def recover_directory(target: str | os.PathLike) -> None:
    """Finish or undo each interrupted save of ``target`` (a folder or a file) whose writer is gone, and delete its
    work folder, each with a warning (module docstring). Nothing happens when there is none."""
    target = os.path.abspath(os.fspath(target))
    for work, marker in _work_folders(target):
        if _writer_alive(work, marker):
            continue
        if marker is None:
            remove_work(work)  # killed before its marker was whole: nothing else in it
        else:
            _recover(work, target)


def recover_entries(directory: str | os.PathLike) -> None:
    """``recover_directory`` for every entry of ``directory`` that has a work folder (e.g. the models of a Triton
    repository, before a server reads it)."""
    directory = os.path.abspath(os.fspath(directory))
    names = set()
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            marker = _read_marker(os.path.join(directory, entry)) if WORK in entry else None
            if marker is not None and isinstance(marker.get("target"), str) and "/" not in marker["target"]:
                names.add(marker["target"])
    for name in sorted(names):
        recover_directory(os.path.join(directory, name))


def current_version(path: str | os.PathLike) -> str:
    """The path to read ``path`` (a folder or a file, or an entry inside one) at: ``path`` itself when it exists or
    no save of it (or of the missing folder it lies in) was interrupted; else, after waiting (up to ``SWAP_WAIT_S``)
    for a live writer's swap to end or finishing a dead writer's, ``path``; else (no permission to rename) the
    same entry of the whole version where it lies, with a warning."""
    path = os.fspath(path)
    if os.path.lexists(path):
        return path
    target, inside = os.path.abspath(path), []
    while not os.path.lexists(os.path.dirname(target)) and os.path.dirname(target) != target:
        target, inside = os.path.dirname(target), [os.path.basename(target), *inside]  # the topmost missing one
    works = [(work, marker) for work, marker in _work_folders(target) if marker is not None]
    if not works:
        return path
    deadline = time.monotonic() + SWAP_WAIT_S
    while (not os.path.lexists(target) and time.monotonic() < deadline
           and any(_writer_alive(work, marker) and os.path.lexists(os.path.join(work, COMPLETE))
                   for work, marker in works)):
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        recover_directory(target)
    if os.path.lexists(target):
        return path
    for work, _ in works:
        source = _whole_version(work)
        if source is not None:
            warnings.warn(f"{target} is missing: a save of it was stopped between its renames; reading its whole "
                          f"version {source} where it lies (move it to {target} to finish the save)")
            return os.path.join(source, *inside)
    return path
