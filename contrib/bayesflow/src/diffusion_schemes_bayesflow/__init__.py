"""Every installed diffusion-schemes noise schedule inside BayesFlow.

``as_bayesflow(schedule)`` takes a built schedule, a scheme name or a config and returns a
BayesFlow ``NoiseSchedule`` that ``bayesflow.networks.DiffusionModel(noise_schedule=...)``
accepts:

>>> from diffusion_schemes_bayesflow import as_bayesflow
>>> schedule = as_bayesflow("cosine")
>>> type(schedule).__mro__[1].__name__, schedule.name
('NoiseSchedule', 'cosine')

Keras reads its backend when first imported; this package selects torch unless
``KERAS_BACKEND`` is already set. Importing the package is light: BayesFlow and Keras are
imported when ``as_bayesflow`` or ``BayesFlowNoiseSchedule`` is first used.
"""

from __future__ import annotations

import os

from diffusion_schemes.lazy import lazy_exports

os.environ.setdefault("KERAS_BACKEND", "torch")

__all__ = ["BayesFlowNoiseSchedule", "as_bayesflow"]


__getattr__, __dir__ = lazy_exports(__name__, {name: "._schedule" for name in __all__})
