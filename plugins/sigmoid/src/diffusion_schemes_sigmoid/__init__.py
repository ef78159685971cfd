"""The sigmoid loss weighting of Kingma & Gao 2023, by name:

>>> import diffusion_schemes as ds
>>> w = ds.create("weighting", {"name": "sigmoid", "bias": 1})
>>> w.spec
SigmoidWeightingSpec(name='sigmoid', bias=1.0)

A schedule config may name it as its weighting:

>>> ds.create("noise_schedule", {"name": "edm", "weighting": "sigmoid"}).weighting
SigmoidWeighting(bias=2.0)

This module only declares the spec; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = ["SigmoidWeighting", "SigmoidWeightingSpec"]


class SigmoidWeightingSpec(ds.WeightingSpec):
    """sigmoid(bias - lambda) on the epsilon-loss (Kingma & Gao 2023).

    >>> from diffusion_schemes_sigmoid import SigmoidWeightingSpec
    >>> SigmoidWeightingSpec(bias=-1).build()
    SigmoidWeighting(bias=-1.0)
    """

    name: Literal["sigmoid"] = "sigmoid"
    builds = "SigmoidWeighting"
    bias: float = Field(
        2.0, allow_inf_nan=False, description="Shift b of w = sigmoid(b - lambda); a larger b weighs low noise more."
    )


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [SigmoidWeightingSpec]


__getattr__, __dir__ = lazy_exports(__name__, {"SigmoidWeighting": "._weighting"})
