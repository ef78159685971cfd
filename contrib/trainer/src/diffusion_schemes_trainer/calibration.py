"""A run's calibrated sampling grid: fit it with ``ds.calibrate_sigmas``, keep it in the run, read it back.

``diffusion-schemes sample RUN --calibrate N`` draws a fresh batch of ``N`` latents (seed
``seed + 2``; the evaluation's latents use ``seed + 1``, so the grid is never judged on the
latents it was fitted to), calibrates the grid of the asked solver and step count on them and
stores it as ``calibrated_grid.json``: the ``explicit`` discretization config under
``"discretization"``, with what the calibration found and cost. ``sample RUN --discretization
calibrated`` samples on the stored grid again.

>>> import os, tempfile
>>> from diffusion_schemes_trainer.calibration import load_grid, save_grid
>>> folder = tempfile.mkdtemp()
>>> save_grid(folder, {"discretization": {"name": "explicit", "sigmas": [80.0, 1.0, 0.002, 0.0]}, "num_steps": 3})
>>> load_grid([folder], 3)["discretization"]["sigmas"]
[80.0, 1.0, 0.002, 0.0]
>>> load_grid([folder], 5)
Traceback (most recent call last):
  ...
diffusion_schemes_trainer.errors.TrainerError: the calibrated grid in ... has 3 steps, not the 5 of --steps; ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import diffusion_schemes as ds

from .errors import TrainerError
from .storage import write_json

__all__ = ["GRID_NAME", "calibrate", "load_grid", "save_grid"]

#: The file holding a run's calibrated grid (in the run directory, or the ``--out`` folder).
GRID_NAME = "calibrated_grid.json"


def calibrate(model: Any, schedule: Any, shape: tuple[int, ...], solver: Any, num_steps: int, seed: int,
              condition: Any = None, guidance: Any = None) -> dict[str, Any]:
    """Calibrate ``num_steps`` steps of ``solver`` (a spec) for ``model`` on latents of ``shape`` (seed ``seed + 2``).

    Returns the record stored in ``calibrated_grid.json``. A solver that cannot be calibrated (one
    that adds noise or picks its own steps) is a :class:`TrainerError` carrying the core's reason.
    """
    g = torch.Generator().manual_seed(seed + 2)
    latents = schedule.init_latents(shape, generator=g)
    try:
        result = ds.calibrate_sigmas(model, latents, schedule, num_steps, solver, condition=condition,
                                     guidance=guidance, generator=g)
    except ds.DiffusionSchemesError as exc:
        raise TrainerError(f"--calibrate: {exc}") from None
    return {
        "discretization": result.discretization,
        "solver": solver.model_dump(mode="json"),
        "num_steps": result.num_steps,
        "error_before": result.error_before,
        "error_after": result.error_after,
        "model_evaluations": result.model_evaluations,
        "seconds": result.seconds,
        "calibration_samples": shape[0],
        "seed": seed + 2,
    }


def save_grid(folder: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` as ``folder/calibrated_grid.json`` (atomically: the old file or the new one)."""
    write_json(Path(folder) / GRID_NAME, record, what="the calibrated grid")


def load_grid(folders: Sequence[str | Path], num_steps: int | None) -> dict[str, Any]:
    """The stored record from the first of ``folders`` holding one, its grid checked against ``num_steps``.

    ``num_steps`` None takes the grid's own step count. No stored grid, an unreadable or invalid
    one, or one of another step count is a :class:`TrainerError` saying what to do.
    """
    path = next((Path(f) / GRID_NAME for f in folders if (Path(f) / GRID_NAME).is_file()), None)
    if path is None:
        raise TrainerError(
            f"--discretization calibrated: no {GRID_NAME} in {', '.join(repr(str(f)) for f in folders)}; "
            "calibrate one first with --calibrate N (N latents, e.g. 256)"
        )
    try:
        record = json.loads(path.read_text())
        spec = ds.parse_spec("discretization", record["discretization"])
    except (OSError, ValueError, KeyError, TypeError, ds.DiffusionSchemesError) as exc:
        raise TrainerError(
            f"{path} does not hold a valid calibrated grid ({exc}); calibrate again with --calibrate N"
        ) from None
    steps = len(spec.sigmas) - 1 if hasattr(spec, "sigmas") else None
    if steps is None:
        raise TrainerError(f"{path} holds a {spec.name!r} discretization, not an explicit grid; calibrate again")
    if num_steps is not None and num_steps != steps:
        raise TrainerError(
            f"the calibrated grid in {path} has {steps} steps, not the {num_steps} of --steps; drop --steps "
            f"(or pass --steps {steps}), or calibrate a grid of {num_steps} steps with "
            f"--calibrate N --steps {num_steps}"
        )
    return {**record, "discretization": spec.model_dump(mode="json"), "num_steps": steps}
