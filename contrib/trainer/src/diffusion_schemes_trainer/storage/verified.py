"""Files that carry their own checksum: written with it, refused on load unless it and their structure match.

A verified file is a dict of plain data (tensors, numbers, strings, lists, dicts) saved with
``torch.save`` and read back with ``torch.load(weights_only=True)``, so loading executes no code
from the file. It holds ``checksum``, the SHA-256 of everything else (a tensor by its dtype, shape
and bytes, read through a byte view of its memory; other leaves by ``repr``), and a ``format``
string naming what it is. :func:`load_verified` names the file and says what is wrong when it is
missing, unreadable (truncated, not a torch file), of another format, malformed (a field missing
or of the wrong type), changed since it was written (a flipped bit) or, when asked, non-finite.

>>> import os, tempfile, torch
>>> from diffusion_schemes_trainer.storage.verified import load_verified, save_verified
>>> path = os.path.join(tempfile.mkdtemp(), "thing.pt")
>>> save_verified(path, {"format": "example/1", "w": torch.ones(3)}, what="the example")
>>> load_verified(path, "example/1", {"w": torch.Tensor}, what="example")["w"]
tensor([1., 1., 1.])
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainerError
from .atomic import save_torch

__all__ = ["checksum", "first_nonfinite", "load_verified", "save_verified"]


def _walk(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, leaf)`` of a payload in a fixed order (mapping keys sorted by their text)."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            if not (where == "" and key == "checksum"):
                yield from _walk(value[key], f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}.{i}")
    else:
        yield where, value


def _cpu_bytes(t: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """``(tensor, view)``: ``t`` on the CPU and contiguous (a copy only when it is not already), and a byte
    view of its memory, valid while that tensor lives (no per-element copy)."""
    if not t.is_cpu or not t.is_contiguous():  # a state dict's tensors usually are already
        t = t.detach().cpu().contiguous()
    size = t.nbytes
    return t, (ctypes.c_char * size).from_address(t.data_ptr()) if size else b""


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every element of a non-empty floating tensor is finite: its minimum and maximum are.

    ``aminmax`` propagates NaN and shows an infinity as the minimum or the maximum, in one pass
    without temporaries (``isfinite().all()`` builds several and took 20 times as long on the CPU).
    """
    low, high = torch.aminmax(t)
    return math.isfinite(low.item()) and math.isfinite(high.item())


#: How many bytes of small floating tensors one finiteness check reads at once (bounds the copy it makes).
_FINITE_CHUNK = 1 << 20


class _FiniteCheck:
    """Whether every element of the floating tensors fed to it is finite, with a few tensor ops per MiB.

    Small tensors (most entries of a state dict) are gathered per dtype, their bytes joined into
    chunks of about :data:`_FINITE_CHUNK`, and each chunk checked at once (:func:`_all_finite`); a
    large tensor is checked on its own. One op per tensor cost more than the checksum itself for a
    U-Net's 875 tensors. The check is exact: a finite tensor is never refused (a sum could overflow).
    """

    def __init__(self) -> None:
        self.finite = True
        self._pending: dict[torch.dtype, tuple[list[Any], list[int]]] = {}

    def add(self, t: torch.Tensor, view: Any) -> None:
        """Feed a CPU, contiguous floating tensor and its byte view (from :func:`_cpu_bytes`)."""
        if not self.finite or not t.nbytes:
            return
        if t.nbytes >= _FINITE_CHUNK:
            self.finite = _all_finite(t)
            return
        views, size = self._pending.setdefault(t.dtype, ([], [0]))
        views.append(view)
        size[0] += t.nbytes
        if size[0] >= _FINITE_CHUNK:
            self._check(t.dtype)

    def _check(self, dtype: torch.dtype) -> None:
        views, size = self._pending.pop(dtype)
        if self.finite and views:
            self.finite = _all_finite(torch.frombuffer(bytearray().join(views), dtype=dtype))

    def done(self) -> bool:
        for dtype in list(self._pending):
            self._check(dtype)
        return self.finite


def checksum(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a payload's leaves but ``checksum`` (a tensor by its dtype, shape and bytes; others by ``repr``).

    >>> import torch
    >>> from diffusion_schemes_trainer.storage.verified import checksum
    >>> a = {"step": 1, "model": {"w": torch.zeros(2)}}
    >>> checksum(a) == checksum({"model": {"w": torch.zeros(2)}, "step": 1})
    True
    >>> checksum(a) == checksum({"step": 1, "model": {"w": torch.tensor([0.0, -0.0])}})   # one bit differs
    False
    """
    return _scan(payload, None)[0]


def _scan(payload: Mapping[str, Any], skip: tuple[str, ...] | None) -> tuple[str, bool]:
    """``(checksum, finite)`` in one walk; ``finite`` (when ``skip`` is given) says every float and floating
    tensor outside the top-level keys ``skip`` is finite.

    The finiteness of the tensors is read from the same CPU bytes the checksum reads, a MiB at a time
    (:class:`_FiniteCheck`); when it is ``False`` the caller looks tensor by tensor
    (:func:`first_nonfinite`) to name the first non-finite one.
    """
    digest = hashlib.sha256()
    update = digest.update
    check = _FiniteCheck()
    finite = True
    dtype_names: dict[torch.dtype, str] = {}
    for where, leaf in _walk(dict(payload)):  # per leaf: path NUL dtype shape bytes NUL, or path NUL repr NUL
        checked = skip is not None and where.partition(".")[0] not in skip
        if isinstance(leaf, torch.Tensor):
            dtype = leaf.dtype
            name = dtype_names.get(dtype) or dtype_names.setdefault(dtype, str(dtype))
            update(f"{where}\0{name}{tuple(leaf.shape)}".encode())
            t, view = _cpu_bytes(leaf)
            update(view)
            update(b"\0")
            if checked and leaf.is_floating_point():
                check.add(t, view)
        else:
            update(f"{where}\0{leaf!r}\0".encode())
            if checked and isinstance(leaf, float) and not math.isfinite(leaf):
                finite = False
    return digest.hexdigest(), check.done() and finite


def first_nonfinite(payload: Mapping[str, Any], skip: tuple[str, ...] = ("history",)) -> str | None:
    """The dotted path of the first tensor or float in ``payload`` holding NaN or inf, else ``None``.

    Leaves under the top-level keys ``skip`` are not checked (a loss history may record a NaN).

    >>> import torch
    >>> from diffusion_schemes_trainer.storage.verified import first_nonfinite
    >>> first_nonfinite({"model": {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}})
    'model.b'
    """
    for where, leaf in _walk(dict(payload)):
        if where.partition(".")[0] in skip:
            continue
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not bool(torch.isfinite(leaf).all()):
            return where
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return where
    return None


def save_verified(path: str | os.PathLike[str], payload: Mapping[str, Any], what: str) -> None:
    """Write ``payload`` with its checksum to ``path`` atomically; a non-finite tensor is refused, by name."""
    digest, finite = _scan(payload, skip=("history",))  # one walk; the exact search only when something is off
    bad = None if finite else first_nonfinite(payload)
    if bad is not None:
        raise TrainerError(f"{bad} holds NaN or inf; {what} {str(path)!r} was not written")
    save_torch(path, {**payload, "checksum": digest}, what=what)


def load_verified(path: str | os.PathLike[str], format: str, fields: Mapping[str, type | tuple[type, ...]],
                  what: str, hint: str = "", finite: bool = False) -> dict[str, Any]:
    """Read a file written by :func:`save_verified` on the CPU, checking it is what it claims to be.

    ``format``: the value its ``format`` field must have; ``fields``: the type of each required
    field; ``what``: what the file is, for messages (``"checkpoint"``); ``hint``: what to do
    about a bad file; ``finite``: also refuse NaN or inf anywhere in it.
    """
    path = Path(path)
    hint = f" {hint}" if hint else ""
    if not path.is_file():
        raise TrainerError(f"no {what} at {str(path)!r}.{hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TrainerError(f"{str(path)!r} is not a readable {what} ({first}); it may be truncated or another "
                           f"kind of file.{hint}") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise TrainerError(f"{str(path)!r} is not a diffusion-schemes-trainer {what} (it holds {found!r}; a {what} "
                           f"has format {format!r}).{hint}")
    digest, all_finite = _scan(payload, skip=("history",) if finite else None)
    if not isinstance(payload.get("checksum"), str) or payload["checksum"] != digest:
        raise TrainerError(f"{str(path)!r} does not match its checksum: its contents changed after it was written "
                           f"(a damaged disk or copy).{hint}")
    wrong = [k for k, typ in fields.items() if not isinstance(payload.get(k), typ) or isinstance(payload.get(k), bool)
             and bool not in (typ if isinstance(typ, tuple) else (typ,))]
    if wrong:
        raise TrainerError(f"{str(path)!r} is not a well-formed {what} ({', '.join(wrong)} missing or malformed).{hint}")
    if not all_finite:
        bad = first_nonfinite(payload)
        if bad is not None:
            raise TrainerError(f"{str(path)!r} holds NaN or inf (in {bad}); it cannot be used.{hint}")
    return payload
