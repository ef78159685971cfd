"""diffusion-schemes-trainer: train, sample and compare diffusion schemes by name from the command line.

It adds four commands to ``diffusion-schemes`` through the ``register_commands`` hook:

- ``diffusion-schemes train``: with no argument, the EDM scheme on a 2-D Gaussian mixture
  with a small MLP on the CPU (about a minute); any installed scheme by name
  (``--preconditioner vp --schedule vp``), any config (``--config run.toml``, ``--set key=value``);
  under ``torchrun`` it trains with DistributedDataParallel.
- ``diffusion-schemes sample``: samples from a checkpoint with any installed solver.
- ``diffusion-schemes compare``: trains several schemes under the same budget and seed.
- ``diffusion-schemes ema``: reconstructs EMAs of other lengths from a run's snapshots (EDM2's
  post-hoc EMA) and measures each.

It is written only against the public contract (``import diffusion_schemes as ds``), the way
a framework would embed the schemes in its own config. This module stays light: the
commands import torch and the training code when they run.

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
    "MLP": "._models",
    "ConvNet": "._models",
    "NoiseEmbedding": "._models",
    "UNet": "._models",
    "GaussianMixture": "._mixture",
    "Checkerboard": "._data",
    "Digits": "._data",
    "MixtureData": "._data",
    "PointCloud": "._data",
    "Splits": "._data",
    "TwoMoons": "._data",
    "TrainConfig": "._config",
    "load_config": "._config",
    "TrainerError": "._errors",
    "load_checkpoint": "._checkpoint",
    "save_checkpoint": "._checkpoint",
    "sliced_wasserstein": "._metrics",
    "train": "._train",
}


@ds.hookimpl
def register_commands(cli: Any) -> None:
    """Add ``train``, ``sample``, ``compare`` and ``ema`` to the ``diffusion-schemes`` command line."""
    from ._commands import add_commands

    add_commands(cli)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
