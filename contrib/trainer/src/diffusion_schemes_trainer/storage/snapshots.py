"""Post-hoc EMA snapshots on disk: ``RUN_DIR/ema/ema-<step>.pt``, verified files (checksum, structure, finite).

Each snapshot holds the power-function EMAs of one step (:mod:`diffusion_schemes_trainer.posthoc_ema`):
``step``, ``sigma_rels`` (the tracked widths) and ``states`` (one state dict per width). A snapshot
holding NaN or inf is neither written nor read: it would turn every reconstruction that uses it
into NaN, and a NaN is not a measurement to rank.

>>> import tempfile, torch
>>> from diffusion_schemes_trainer.storage.snapshots import load_snapshots, save_snapshot
>>> run = tempfile.mkdtemp()
>>> path = save_snapshot(run, 200, [0.05, 0.1], [{"w": torch.ones(2)}, {"w": torch.zeros(2)}])
>>> [(s["step"], s["sigma_rels"]) for s in load_snapshots(run)]
[(200, [0.05, 0.1])]
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainerError
from .verified import load_verified, save_verified

__all__ = ["SNAPSHOT_DIR", "load_snapshots", "save_snapshot"]

#: The folder of a run that holds the snapshots, one file per step.
SNAPSHOT_DIR = "ema"
FORMAT = "diffusion-schemes-trainer/ema-snapshot/1"
_HINT = "Delete it and reconstruct from the other snapshots, or train again."


def save_snapshot(run_dir: str | os.PathLike[str], step: int, sigma_rels: Sequence[float],
                  states: Sequence[dict[str, torch.Tensor]]) -> Path:
    """Write the EMAs of ``step`` to ``run_dir/ema/ema-<step>.pt`` atomically, with their checksum."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"ema-{step:08d}.pt"
    save_verified(path, {"format": FORMAT, "step": int(step), "sigma_rels": [float(s) for s in sigma_rels],
                         "states": list(states)}, what="the EMA snapshot")
    return path


def _check(path: Path, snap: dict[str, Any], keys: set[str] | None) -> None:
    rels, states = snap["sigma_rels"], snap["states"]
    ok = snap["step"] >= 1 and len(rels) == len(states) and len(rels) > 0 and all(
        isinstance(r, float) for r in rels) and all(
        isinstance(s, dict) and all(isinstance(v, torch.Tensor) for v in s.values()) for s in states)
    if ok and keys is not None:
        ok = all(set(s) == keys for s in states)
    if not ok:
        raise TrainerError(f"{str(path)!r} is not a well-formed EMA snapshot (its widths and states do not match, or "
                           f"its states are not those of this run's model). {_HINT}")


def load_snapshots(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The snapshots of a run, by step, each verified (checksum, structure, finite values)."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    files = sorted(p for p in folder.glob("ema-*.pt") if re.fullmatch(r"ema-\d+\.pt", p.name)) if folder.is_dir() else []
    if not files:
        raise TrainerError(
            f"no post-hoc EMA snapshots in {str(folder)!r}. Train with ema_profiles set (the default, "
            "--ema-profiles 0.05,0.10) so that snapshots are written every ema_snapshot_every steps."
        )
    out: list[dict[str, Any]] = []
    keys = None
    for path in files:
        snap = load_verified(path, FORMAT, {"step": int, "sigma_rels": list, "states": list}, what="EMA snapshot",
                             hint=_HINT, finite=True)
        _check(path, snap, keys)
        keys = set(snap["states"][0])
        out.append(snap)
    return out
