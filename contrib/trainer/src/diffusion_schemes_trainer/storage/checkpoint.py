"""Checkpoints: plain data only, written atomically with their checksum, verified on load.

A checkpoint is a verified file (:mod:`.verified`): a dict that ``torch.load(path,
weights_only=True)`` reads without executing code from the file, with

- ``format``: :data:`FORMAT`; ``step``: optimiser steps done; ``checksum``: verified on load;
- ``config``: the trainer config (``TrainConfig.model_dump(mode="json")``), the one source of the
  run's schemes, data and backbone (rebuilt by name, :func:`diffusion_schemes_trainer.runs.rebuild`);
- ``specs``: the preconditioner's and the noise schedule's specs as plain dicts, for readers;
- ``model``, ``ema``: state dicts of the backbone and of its moving average; ``posthoc_ema``: the
  post-hoc EMA profiles; ``optimizer``; ``uncertainty``: the learned loss weight (if any);
- ``rng``: the global torch RNG state (the training noise itself is drawn from generators
  seeded by ``(seed, step, rank)``, so it needs no state); ``history``: loss and metric curves.

A payload holding a non-finite tensor is refused (the error names the first one).

>>> import tempfile, os, torch
>>> from diffusion_schemes_trainer import save_checkpoint, load_checkpoint
>>> folder = tempfile.mkdtemp()
>>> save_checkpoint(os.path.join(folder, "checkpoint.pt"), {"step": 3, "config": {}, "specs": {}, "model": {"w": torch.ones(2)}})
>>> load_checkpoint(folder)["step"]
3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .verified import load_verified, save_verified

__all__ = ["CHECKPOINT_NAME", "FORMAT", "load_checkpoint", "save_checkpoint"]

FORMAT = "diffusion-schemes-trainer/1"
CHECKPOINT_NAME = "checkpoint.pt"
#: The fields every checkpoint has, and their types.
FIELDS = {"step": int, "config": dict, "specs": dict, "model": dict}


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (with :data:`FORMAT` and its checksum) to ``path`` atomically; SIGINT waits until it is done."""
    save_verified(path, {**payload, "format": FORMAT}, what="the checkpoint")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint (``path``: the file or its run directory) on the CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    return load_verified(
        path, FORMAT, FIELDS, what="checkpoint",
        hint=f"Pass the run directory of a training run (it holds {CHECKPOINT_NAME}) or the checkpoint file itself; "
        "a damaged one cannot be used: resume from another copy of the run, or train again.",
    )
