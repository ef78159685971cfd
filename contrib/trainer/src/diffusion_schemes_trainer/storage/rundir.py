"""A run directory: one process at a time (an OS lock), and the files a run writes there.

:class:`RunLock` holds an OS file lock (``filelock``, ``flock`` on Unix) on ``RUN_DIR/.lock`` while a
process trains there. The operating system releases it when the process ends, however it ends, so
a killed process never leaves a lock behind that someone has to guess about, and two processes
starting at once cannot both take it. Beside it, ``.lock-owner.json`` names the holder (pid, host,
start time) for the message a second process gets. Taking the lock also removes the temporary
files of writes that a killed process left behind (no other process can be writing there).

:data:`RUN_OUTPUTS` lists what a run, and the commands run on it, write in the directory;
:func:`clear_outputs` removes them before a fresh run (``train --overwrite``), so nothing of the
previous run (its post-hoc EMA snapshots included) is mistaken for the new one's.

>>> import tempfile
>>> from pathlib import Path
>>> from diffusion_schemes_trainer.storage.rundir import RunLock
>>> folder = Path(tempfile.mkdtemp())
>>> with RunLock(folder):
...     RunLock(folder).acquire()
Traceback (most recent call last):
  ...
diffusion_schemes_trainer.errors.TrainerError: the run directory ... is in use by process ... Wait for it to finish, ...
>>> with RunLock(folder) as lock:
...     lock.held
True
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import filelock

from ..errors import TrainerError
from .atomic import TEMPORARY_PATTERNS, write_json
from .checkpoint import CHECKPOINT_NAME

__all__ = ["LOCK_NAME", "RUN_OUTPUTS", "RunLock", "clear_outputs", "outputs_in"]

LOCK_NAME = ".lock"
OWNER_NAME = ".lock-owner.json"
#: What a run and the commands run on it write in its directory (``ema/`` holds the post-hoc EMA snapshots).
RUN_OUTPUTS = (CHECKPOINT_NAME, "metrics.json", "samples.pt", "samples.png", "loss.png", "uncertainty.png",
               "digits_classifier.pt", "ema.json", "guidance.json", "guidance.png", "samples-*.pt", "samples-*.png",
               "ema/ema-*.pt")


class RunLock:
    """The lock of one run directory (a context manager; :meth:`acquire` and :meth:`release` also work)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(run_dir)
        self.path = self.folder / LOCK_NAME
        self._lock = filelock.FileLock(str(self.path), timeout=0)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return bool(self._lock.is_locked)

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`TrainerError` naming the process that holds it."""
        try:
            self._lock.acquire()
        except filelock.Timeout:
            owner = self._owner()
            who = (f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})" if owner
                   else "another process")
            raise TrainerError(
                f"the run directory {str(self.folder)!r} is in use by {who}. Wait for it to finish, or pick another "
                "--run-dir."
            ) from None
        except OSError as exc:
            raise TrainerError(f"cannot lock the run directory {str(self.folder)!r}: {exc.strerror or exc}") from None
        write_json(self.folder / OWNER_NAME, {"pid": os.getpid(), "host": socket.gethostname(),
                                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}, what="the lock's owner note")
        for pattern in TEMPORARY_PATTERNS:
            for path in [*self.folder.glob(pattern), *self.folder.glob(f"*/{pattern}")]:
                with contextlib.suppress(OSError):
                    path.unlink()
        return self

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads((self.folder / OWNER_NAME).read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def release(self) -> None:
        """Give the lock back (the owner note goes first, while the lock is still held)."""
        if self.held:
            with contextlib.suppress(OSError):
                (self.folder / OWNER_NAME).unlink()
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def outputs_in(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The files of :data:`RUN_OUTPUTS` present in ``run_dir``."""
    folder = Path(run_dir)
    return sorted({p for pattern in RUN_OUTPUTS for p in folder.glob(pattern) if p.is_file()})


def clear_outputs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove what a previous run wrote in ``run_dir`` (call it holding the lock); returns what was removed."""
    removed = outputs_in(run_dir)
    for path in removed:
        try:
            path.unlink()
        except OSError as exc:
            raise TrainerError(f"cannot remove {str(path)!r} of the previous run: {exc.strerror or exc}; remove it "
                               "by hand or pick another --run-dir") from None
    return removed
