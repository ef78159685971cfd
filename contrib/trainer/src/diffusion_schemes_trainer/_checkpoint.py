"""Checkpoints: plain data only, written atomically, rebuilt by name.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it without executing code from the file:

- ``format``: :data:`FORMAT`; ``step``: optimiser steps done;
- ``config``: the trainer config (``TrainConfig.model_dump(mode="json")``);
- ``specs``: the preconditioner's and the noise schedule's specs as plain dicts
  (``obj.spec.model_dump(mode="json")``); :func:`rebuild` builds them again with
  :func:`diffusion_schemes.create`, by name, from whichever distribution provides that name;
- ``model``, ``ema``: state dicts of the backbone and of its moving average; ``optimizer``;
- ``rng``: the global torch RNG state (the training noise itself is drawn from generators
  seeded by ``(seed, step, rank)``, so it needs no state); ``history``: loss and metric curves.

Writing goes to a temporary file in the same folder, flushed to disk, then ``os.replace``-d
over the old checkpoint: a process killed mid-write leaves the previous checkpoint intact.

>>> import tempfile, os, torch
>>> from diffusion_schemes_trainer import save_checkpoint, load_checkpoint
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "checkpoint.pt")
>>> save_checkpoint(path, {"format": FORMAT, "step": 3, "config": {}, "specs": {}, "model": {"w": torch.ones(2)}})
>>> load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ._errors import TrainerError

__all__ = ["CHECKPOINT_NAME", "FORMAT", "load_checkpoint", "rebuild", "save_checkpoint"]

FORMAT = "diffusion-schemes-trainer/1"
CHECKPOINT_NAME = "checkpoint.pt"
_REQUIRED = ("format", "step", "config", "specs", "model")


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TrainerError(
            f"cannot write the checkpoint {str(path)!r}: {exc.strerror or exc}. "
            "Check that the run directory is writable and the disk is not full."
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
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        missing = [k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]
        raise TrainerError(f"{str(path)!r} is not a diffusion-schemes-trainer checkpoint (missing {', '.join(missing)})")
    if payload["format"] != FORMAT:
        raise TrainerError(f"{str(path)!r} has format {payload['format']!r}; this trainer reads {FORMAT!r}")
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
    precond = ds.create("preconditioner", payload["specs"]["preconditioner"], model=backbone)
    schedule = ds.create("noise_schedule", payload["specs"]["noise_schedule"])
    return config, precond, schedule
