"""A run of ``diffusion-schemes train --model unet2d`` saved as a diffusers pipeline folder: :func:`export_run`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import DiffusersBridgeError
from ._scheduler import as_diffusers_scheduler


def export_run(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, solver: Any = None,
    discretization: Any = "schedule", ema: bool = True,
) -> Path:
    """Save a trainer run with the ``unet2d`` backbone as a diffusers ``DDPMPipeline`` folder; returns ``out_dir``.

    The folder holds ``unet/`` (the run's ``UNet2DModel``, its EMA weights when ``ema`` and the
    checkpoint has them, by ``save_pretrained``), ``scheduler/`` (:func:`as_diffusers_scheduler` of
    the run's noise schedule and preconditioner, with ``solver``, default the run's, and
    ``discretization``, default the schedule's own grid: what ``diffusion-schemes sample`` uses) and
    ``model_index.json``. Load it back with::

        unet = UNet2DModel.from_pretrained(out_dir, subfolder="unet")
        scheduler = DiffusionSchemesScheduler.from_pretrained(out_dir, subfolder="scheduler")
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)

    ``DDPMPipeline`` hands the network its latent as it is (it never calls ``scale_model_input``),
    which is the network's input only where ``c_in`` equals the schedule's ``alpha``: the
    ``discrete`` scheme (a diffusers noise table), ``vp`` and ``iddpm``. Pipelines that call
    ``scale_model_input`` take any scheme. A class-conditional run's network takes ``class_labels``
    (its null label is the number of classes).

    Args:
        run_dir: the run directory (or its checkpoint file).
        out_dir: the folder to write (created; files in it are replaced).
        solver: the solver by name or config; ``None``: the run's ``solver``.
        discretization: the grid by name or config; default the schedule's own.
        ema: the EMA weights (``True``, where saved) or the trained ones.
    """
    try:
        from diffusion_schemes_trainer.runs import rebuild
        from diffusion_schemes_trainer.storage import load_checkpoint
    except ImportError:
        raise DiffusersBridgeError(
            "export_run reads a run of the trainer, which is not installed: pip install diffusion-schemes-trainer"
        ) from None
    from diffusers import DDPMPipeline, UNet2DModel

    config, precond, schedule = rebuild(load_checkpoint(run_dir), ema=ema)
    unet = getattr(precond.model, "unet", None)
    if not isinstance(unet, UNet2DModel):
        raise DiffusersBridgeError(
            f"the run in {run_dir} was trained with the {config.model.name!r} backbone, which diffusers cannot load; "
            "only runs of the 'unet2d' backbone (diffusers' UNet2DModel) export: train with --model unet2d"
        )
    scheduler = as_diffusers_scheduler(
        config.noise_schedule, config.solver if solver is None else solver, discretization, config.preconditioner
    )
    out = Path(out_dir)
    DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(out)
    return out
