"""One process per run directory, and Ctrl-C that never tears a checkpoint.

:class:`RunLock` holds ``RUN_DIR/.lock`` (created exclusively, holding the owner's pid and host)
while a process trains there: a second process gets a clear error, and a lock left by a process
that no longer runs on this host is taken over. Taking the lock also removes the temporary files
of writes that a killed process left behind (no other process can be writing there).

:func:`deferred_interrupt` delays SIGINT until the end of a ``with`` block, so a checkpoint write
is either complete or not started when :class:`KeyboardInterrupt` arrives.

>>> import tempfile
>>> from pathlib import Path
>>> from diffusion_schemes_trainer._runguard import RunLock
>>> folder = Path(tempfile.mkdtemp())
>>> with RunLock(folder):
...     RunLock(folder).acquire()
Traceback (most recent call last):
  ...
diffusion_schemes_trainer._errors.TrainerError: the run directory ... is in use by process ... Wait for it to finish, ...
>>> (folder / ".lock").exists()
False
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import TrainerError

__all__ = ["LOCK_NAME", "HeldInterrupt", "RunInterrupted", "RunLock", "deferred_interrupt"]

LOCK_NAME = ".lock"
#: Temporary files of interrupted writes: ``.checkpoint.pt.tmp-<pid>``, ``.metrics.json.tmp``, ...
_TEMPORARY = (".*.tmp", ".*.tmp-*")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with a message that says which checkpoint is intact and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HeldInterrupt(KeyboardInterrupt):
    """Ctrl-C that :func:`deferred_interrupt` held back until its block had completed."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """The lock of one run directory (a context manager; :meth:`acquire` and :meth:`release` also work)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`TrainerError` naming the process that holds it."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None or self._stale(owner):
                    self.path.unlink(missing_ok=True)  # a killed process's lock: take it over
                    continue
                raise TrainerError(
                    f"the run directory {str(self.path.parent)!r} is in use by process {owner.get('pid')} on "
                    f"{owner.get('host')} (since {owner.get('since')}). Wait for it to finish, or pick another "
                    f"--run-dir; if that process no longer runs, delete {str(self.path)!r}."
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            self._remove_temporaries()
            return self
        raise TrainerError(f"could not take the lock {str(self.path)!r}; another process keeps recreating it")

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            # being written right now, or garbage: garbage older than a few seconds is stale
            try:
                return None if time.time() - self.path.stat().st_mtime > 5 else {"pid": "?", "host": "?", "since": "?"}
            except OSError:
                return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        pid = owner.get("pid")
        if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # another machine's process (shared disk): cannot tell, assume it runs
        return not _alive(pid)

    def _remove_temporaries(self) -> None:
        for pattern in _TEMPORARY:
            for path in self.path.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    path.unlink()

    def release(self) -> None:
        """Give the lock back (only if this process still holds it)."""
        if self.held:
            self.held = False
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_deferring: list[bool] = []  # non-empty while a deferred_interrupt block runs in the main thread


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT back until the block ends, then raise :class:`HeldInterrupt` if one came.

    Only the main thread can install signal handlers; elsewhere the block runs unprotected.
    Blocks nest: the outermost one holds the signal until it ends.

    >>> import os, signal
    >>> from diffusion_schemes_trainer._runguard import deferred_interrupt
    >>> done = []
    >>> try:
    ...     with deferred_interrupt():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         done.append("the block finished")
    ... except KeyboardInterrupt:
    ...     done.append("then the interrupt")
    >>> done
    ['the block finished', 'then the interrupt']
    """
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # another thread cannot catch signals; inside an outer block, the outer one holds them
        return
    _deferring.append(True)
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    if previous is None:  # installed outside Python: restore Python's default
        previous = signal.default_int_handler
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _deferring.pop()
    if caught:
        raise HeldInterrupt
