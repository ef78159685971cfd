"""The data sets, one module each, holding the data set and its config table (``[data]``).

Adding a data set is one module here: a class with ``kind``, ``shape``, ``num_classes`` and
``splits(train_size, eval_size, seed)``, and a config table (a :class:`~diffusion_schemes_trainer.schema.Section`
with a ``name`` literal, ``train_size``, ``eval_size``, ``default_model`` and ``build()``), listed in
:data:`DATA_CONFIGS`.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from .base import PointCloud, Splits
from .digits import Digits, DigitsConfig
from .mixture import GaussianMixture, GaussianMixtureConfig, MixtureData
from .points import Checkerboard, CheckerboardConfig, TwoMoons, TwoMoonsConfig

__all__ = ["DATA_CLASSES", "DATA_CONFIGS", "Checkerboard", "CheckerboardConfig", "DataConfig", "Digits", "DigitsConfig",
           "GaussianMixture", "GaussianMixtureConfig", "MixtureData", "PointCloud", "Splits", "TwoMoons", "TwoMoonsConfig"]

#: Every data set's config table; the ``[data]`` table is one of them, picked by ``name``.
DATA_CONFIGS = (GaussianMixtureConfig, TwoMoonsConfig, CheckerboardConfig, DigitsConfig)
DataConfig = Annotated[Union[DATA_CONFIGS], Field(discriminator="name")]  # type: ignore[valid-type]
#: The data sets' config tables by name.
DATA_CLASSES: dict[str, Any] = {c.model_fields["name"].default: c for c in DATA_CONFIGS}
