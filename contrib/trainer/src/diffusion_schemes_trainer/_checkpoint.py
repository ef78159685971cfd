"""Checkpoints: plain data only, written atomically, rebuilt by name.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it without executing code from the file:

- ``format``: :data:`FORMAT`; ``step``: optimiser steps done;
- ``config``: the trainer config (``TrainConfig.model_dump(mode="json")``);
- ``specs``: the preconditioner's and the noise schedule's specs as plain dicts
  (``obj.spec.model_dump(mode="json")``), for readers of the file; :func:`rebuild` and
  ``--resume`` both build the schemes from ``config`` (one source), with
  :func:`diffusion_schemes.create`, by name, from whichever distribution provides that name;
- ``model``, ``ema``: state dicts of the backbone and of its moving average; ``optimizer``;
- ``rng``: the global torch RNG state (the training noise itself is drawn from generators
  seeded by ``(seed, step, rank)``, so it needs no state); ``history``: loss and metric curves;
- ``checksum``: SHA-256 of everything else (tensors by their bytes, dtype and shape), verified
  on load, so a flipped bit is an error instead of silently different weights.

A payload holding a non-finite tensor is refused (the error names the first one). Writing goes
to a temporary file in the same folder, flushed to disk, then ``os.replace``-d over the old
checkpoint, with SIGINT held back until the replacement is done: a process killed or
interrupted mid-write leaves the previous checkpoint intact.

>>> import tempfile, os, torch
>>> from diffusion_schemes_trainer import save_checkpoint, load_checkpoint
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "checkpoint.pt")
>>> save_checkpoint(path, {"format": FORMAT, "step": 3, "config": {}, "specs": {}, "model": {"w": torch.ones(2)}})
>>> load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ._errors import TrainerError
from ._runguard import deferred_interrupt

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "checksum",
    "first_nonfinite",
    "load_checkpoint",
    "rebuild",
    "save_checkpoint",
    "write_atomically",
]

FORMAT = "diffusion-schemes-trainer/1"
CHECKPOINT_NAME = "checkpoint.pt"
_REQUIRED = ("format", "step", "config", "specs", "model")


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


def checksum(payload: dict[str, Any]) -> str:
    """SHA-256 of a payload's leaves (a tensor by its dtype, shape and bytes; others by ``repr``).

    >>> import torch
    >>> from diffusion_schemes_trainer._checkpoint import checksum
    >>> a = {"step": 1, "model": {"w": torch.zeros(2)}}
    >>> checksum(a) == checksum({"model": {"w": torch.zeros(2)}, "step": 1})
    True
    >>> checksum(a) == checksum({"step": 1, "model": {"w": torch.tensor([0.0, -0.0])}})   # one bit differs
    False
    """
    digest = hashlib.sha256()
    for where, leaf in _walk(payload):
        digest.update(where.encode() + b"\0")
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous()
            if t.storage_offset() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(bytes(t.untyped_storage()))
        else:
            digest.update(repr(leaf).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def first_nonfinite(payload: dict[str, Any]) -> str | None:
    """The dotted path of the first tensor or float in ``payload`` holding NaN or inf, else ``None``.

    >>> import torch
    >>> from diffusion_schemes_trainer._checkpoint import first_nonfinite
    >>> first_nonfinite({"model": {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}})
    'model.b'
    """
    for where, leaf in _walk(payload):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not bool(torch.isfinite(leaf).all()):
            return where
        if isinstance(leaf, float) and not math.isfinite(leaf) and not where.startswith("history"):
            return where
    return None


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (with its checksum) to ``path`` atomically: temporary file, fsync, ``os.replace``.

    Refuses a payload with a non-finite tensor, naming it; SIGINT waits until the write is done.
    """
    path = Path(path)
    bad = first_nonfinite(payload)
    if bad is not None:
        raise TrainerError(f"{bad} holds NaN or inf; the checkpoint {str(path)!r} was not written")
    write_atomically(path, {**payload, "checksum": checksum(payload)}, what="the checkpoint")


def write_atomically(path: str | os.PathLike[str], obj: Any, what: str = "") -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file (fsync, ``os.replace``), SIGINT held back:
    ``path`` is the old file or the new one, never a partial one; a failure is a :class:`TrainerError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with deferred_interrupt():
            try:
                with open(tmp, "wb") as fh:
                    torch.save(obj, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        raise TrainerError(
            f"cannot write {what or 'the file'} {str(path)!r}: {getattr(exc, 'strerror', None) or exc}. "
            "Check that the folder is writable and the disk is not full."
        ) from None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` on the CPU; a clear error when missing or corrupt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise TrainerError(
            f"no checkpoint at {str(path)!r}. Pass the run directory of a training run (it holds "
            f"{CHECKPOINT_NAME}) or the checkpoint file itself."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainerError(
            f"{str(path)!r} is not a readable checkpoint ({first}). It may be truncated or not a "
            "checkpoint of diffusion-schemes-trainer; resume from another run or train again."
        ) from None
    if not isinstance(payload, dict):
        raise TrainerError(
            f"{str(path)!r} holds a {type(payload).__name__}, not a diffusion-schemes-trainer checkpoint"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise TrainerError(f"{str(path)!r} is not a diffusion-schemes-trainer checkpoint (missing {', '.join(missing)})")
    if payload["format"] != FORMAT:
        raise TrainerError(f"{str(path)!r} has format {payload['format']!r}; this trainer reads {FORMAT!r}")
    if "checksum" in payload and payload["checksum"] != checksum(payload):  # older checkpoints have none
        raise TrainerError(
            f"{str(path)!r} does not match its checksum: its contents changed after it was written (a damaged "
            "disk or copy). Resume from another copy of the run, or train again."
        )
    shapes = {"config": dict, "specs": dict, "model": dict, "step": int}
    wrong = [k for k, typ in shapes.items() if not isinstance(payload[k], typ)]
    if wrong:
        raise TrainerError(f"{str(path)!r} is not a diffusion-schemes-trainer checkpoint ({', '.join(wrong)} malformed)")
    return payload


def rebuild(payload: dict[str, Any], ema: bool = True) -> tuple[Any, Any, Any]:
    """``(config, preconditioner, noise_schedule)`` from a checkpoint, built by name.

    The backbone comes from the config's ``model`` section and gets the EMA weights when
    ``ema`` (and the checkpoint has them), else the trained weights.
    """
    import diffusion_schemes as ds

    from ._config import load_config

    from ._train import num_classes

    config = load_config(base=payload["config"])
    data = config.data.build()
    backbone = config.model.build(data.shape, num_classes(config, data))
    state = payload.get("ema") if ema and payload.get("ema") is not None else payload["model"]
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainerError(f"the checkpoint's weights do not fit its model config: {exc}") from None
    # the config is the one source of a run's schemes, for sampling as for --resume
    precond = ds.create("preconditioner", config.preconditioner, model=backbone)
    schedule = ds.create("noise_schedule", config.noise_schedule)
    return config, precond, schedule
