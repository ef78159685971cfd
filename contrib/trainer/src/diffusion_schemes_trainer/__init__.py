"""diffusion-schemes-trainer: train, sample and compare diffusion schemes by name from the command line.

It adds five commands to ``diffusion-schemes`` through the ``register_commands`` hook:

- ``diffusion-schemes train``: with no argument, the EDM scheme on a 2-D Gaussian mixture
  with a small MLP on the CPU (2 to 4 minutes on 2 cores); any installed scheme by name
  (``--preconditioner vp --schedule vp``), any config (``--config run.toml``, ``--set key=value``);
  under ``torchrun`` it trains with DistributedDataParallel.
- ``diffusion-schemes sample``: samples from a checkpoint with any installed solver.
- ``diffusion-schemes nll``: the held-out negative log-likelihood of a run (bits/dim) beside its floor.
- ``diffusion-schemes compare``: trains several schemes under the same budget and seed.
- ``diffusion-schemes ema``: reconstructs EMAs of other lengths from a run's snapshots (EDM2's
  post-hoc EMA) and measures each.

It is written only against the public contract (``import diffusion_schemes as ds``), the way
a framework would embed the schemes in its own config. This module stays light (its names
are imported when first used), so listing the installed schemes does not load the trainer.

Layout, by role (each module imports only modules listed before it; no import circle, a test
walks the graph):

- ``errors``: :class:`TrainerError` (exit 2) and ``RunInterrupted`` (exit 130);
- ``storage/``: everything on disk: the one atomic-write helper, checksummed files verified on
  load (checkpoint, post-hoc EMA snapshots, the digits classifier), the run-directory lock
  (``filelock``) and the list of a run's outputs;
- ``schema``: the base of every config table (no unknown fields, no boolean where a number is meant);
- ``posthoc_ema``: EDM2's post-hoc EMA as math only (profiles, power-function EMA, least squares);
- ``metrics/``: sliced Wasserstein distance, ``fd_digits`` and its classifier, class accuracy;
- ``data/``: one module per data set with its ``[data]`` table; ``models/``: one module per
  backbone with its ``[model]`` table, all sharing the noise and class embedding of ``models.blocks``;
- ``config``: ``TrainConfig`` (the schemes by name, the data, the backbone, the optimiser), TOML in and out;
- ``limits``: requests that cannot fit in memory are refused up front;
- ``evaluation``, ``likelihood``, ``report``, ``plots``: sample and measure, the held-out negative
  log-likelihood (bits/dim) beside the data's own, the text and progress bars a person reads, the
  pictures (matplotlib imported only when drawing);
- ``runs``: a run rebuilt from its checkpoint, its judges, its guidance sweep;
- ``training/``: the loop, on one process or under torchrun;
- ``commands/``: one module per command (``train``, ``sample``, ``nll``, ``ema``, ``compare``) holding
  its arguments and its work.

A new command is a module in ``commands/`` listed in ``commands.COMMANDS``; a new backbone is a
module in ``models/`` listed in ``models.MODEL_CONFIGS``; a new data set is a module in ``data/``
listed in ``data.DATA_CONFIGS``.

>>> import diffusion_schemes_trainer as trainer
>>> cfg = trainer.TrainConfig()
>>> cfg.preconditioner.name, cfg.noise_schedule.name, cfg.data.name
('edm', 'edm', 'gaussian_mixture')
"""

from __future__ import annotations

from typing import Any

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = [
    "MLP",
    "Checkerboard",
    "ConvNet",
    "Digits",
    "GaussianMixture",
    "MixtureData",
    "NoiseEmbedding",
    "PointCloud",
    "Splits",
    "TrainConfig",
    "TrainerError",
    "TwoMoons",
    "UNet",
    "load_checkpoint",
    "load_config",
    "register_commands",
    "save_checkpoint",
    "sliced_wasserstein",
    "train",
]

_LAZY = {
    "MLP": ".models",
    "ConvNet": ".models",
    "NoiseEmbedding": ".models",
    "UNet": ".models",
    "GaussianMixture": ".data",
    "Checkerboard": ".data",
    "Digits": ".data",
    "MixtureData": ".data",
    "PointCloud": ".data",
    "Splits": ".data",
    "TwoMoons": ".data",
    "TrainConfig": ".config",
    "load_config": ".config",
    "TrainerError": ".errors",
    "load_checkpoint": ".storage",
    "save_checkpoint": ".storage",
    "sliced_wasserstein": ".metrics",
    "train": ".training",
}


@ds.hookimpl
def register_commands(cli: Any) -> None:
    """Add ``train``, ``sample``, ``nll``, ``compare`` and ``ema`` to the ``diffusion-schemes`` command line."""
    from .commands import add_commands  # the commands and what they run load only with the command line

    add_commands(cli)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
