"""A writer killed at every step boundary of its saves, through bertfast.atomic_recovery's test-only seam
(``KILL_AFTER_STEP``): the window between two renames is hit for certain, not by chance."""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import traceback
import warnings
from collections.abc import Callable, Iterator

from bertfast.atomic_recovery import KILL_AFTER_STEP


def killed_after_each_step(write: Callable[[], object], reset: Callable[[], object]) -> Iterator[bool]:
    """For N = 1, 2, ...: ``reset()`` (the old version back), then ``write()`` in a process forked from this one
    that SIGKILLs itself right after step N of its saves; yield whether it was killed, for the caller to check what
    it left. The last yield (False) is the write that outlived every step: each boundary has then been hit."""
    for steps in itertools.count(1):
        reset()
        pid = os.fork()
        if pid == 0:  # the writer
            code = 1
            try:
                os.environ[KILL_AFTER_STEP] = str(steps)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    write()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)  # reaped: the writer's pid is gone, as after a real kill
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0, "the write failed unkilled (its traceback is in the output)"
            yield False
            return
        assert os.WTERMSIG(status) == signal.SIGKILL
        yield True


def fresh_copy(source: str, target: str) -> Callable[[], None]:
    """A ``reset`` for ``killed_after_each_step``: the parent of ``target`` emptied, then ``source`` copied to
    ``target``."""
    def reset() -> None:
        parent = os.path.dirname(target)
        shutil.rmtree(parent, ignore_errors=True)
        os.makedirs(parent)
        shutil.copytree(source, target, symlinks=True)
    return reset


def read_only_renames(monkeypatch) -> None:
    """Renames fail as in a folder the reader may not write (the tests run as root, where chmod does not stop
    them): a reader must then read the whole version where it lies, or name it."""
    def refuse(source, target):
        raise PermissionError(13, "Permission denied", source)

    monkeypatch.setattr(os, "rename", refuse)
