"""Every file the trainer writes goes through :func:`write_atomically`: the old file or the new one, never half.

The content is written to a temporary file in the same folder (``.NAME.tmp-PID``), flushed to
disk, then ``os.replace``-d over ``NAME``, and the folder is flushed too (the rename is an entry
of the folder: without it, a crash of the machine soon after could bring back the old file), with
SIGINT held back until the replacement is done (:func:`deferred_interrupt`). A process killed or interrupted mid-write leaves the previous file
intact; the run-directory lock removes the temporary files such a process left behind. A failure
(a full disk, a read-only folder) is a :class:`~diffusion_schemes_trainer.errors.TrainerError`
naming the file. :func:`save_torch`, :func:`write_text` and :func:`write_json` are the usual
contents; pictures pass matplotlib's ``savefig`` as the writer.

>>> import json, os, tempfile
>>> from diffusion_schemes_trainer.storage.atomic import write_json
>>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
>>> write_json(path, {"step": 3})
>>> json.load(open(path)), sorted(os.listdir(os.path.dirname(path)))
({'step': 3}, ['metrics.json'])
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import TrainerError

__all__ = ["TEMPORARY_PATTERNS", "HeldInterrupt", "deferred_interrupt", "save_torch", "sync_folder",
           "write_atomically", "write_json", "write_text"]

#: The names of temporary files of interrupted writes (``.checkpoint.pt.tmp-1234``).
TEMPORARY_PATTERNS = (".*.tmp-*",)


class HeldInterrupt(KeyboardInterrupt):
    """Ctrl-C that :func:`deferred_interrupt` held back until its block had completed."""


_deferring: list[bool] = []  # non-empty while a deferred_interrupt block runs in the main thread


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT back until the block ends, then raise :class:`HeldInterrupt` if one came.

    Only the main thread can install signal handlers; elsewhere the block runs unprotected.
    Blocks nest: the outermost one holds the signal until it ends.

    >>> import os, signal
    >>> from diffusion_schemes_trainer.storage.atomic import deferred_interrupt
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


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], what: str = "") -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it and move it over ``path``; returns ``path``.

    ``what`` names the file in the error message (``"the checkpoint"``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with deferred_interrupt():
            try:
                with open(tmp, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                sync_folder(path.parent)
            finally:
                tmp.unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        raise TrainerError(
            f"cannot write {what or 'the file'} {str(path)!r}: {getattr(exc, 'strerror', None) or exc}. "
            "Check that the folder is writable and the disk is not full."
        ) from None
    return path


#: What ``fsync`` of a folder answers where the file system or platform cannot do it (then the OS keeps the rename).
_CANNOT_SYNC_FOLDER = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush ``folder``'s entries to disk: a file renamed into it is there after a crash of the machine (POSIX).

    Where a folder cannot be opened or flushed (Windows, some network file systems) this does nothing; any other
    failure (an I/O error) is raised, since the rename may then not be on disk.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_FOLDER:
            raise
    finally:
        os.close(fd)


def save_torch(path: str | os.PathLike[str], obj: Any, what: str = "") -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return write_atomically(path, lambda fh: torch.save(obj, fh), what)


def write_text(path: str | os.PathLike[str], text: str, what: str = "") -> Path:
    """UTF-8 ``text`` to ``path`` atomically."""
    return write_atomically(path, lambda fh: fh.write(text.encode("utf-8")), what)


def write_json(path: str | os.PathLike[str], obj: Any, what: str = "") -> None:
    """``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n", what)
