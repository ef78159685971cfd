"""The backbones, one module each, holding the network and its config table (``[model]``).

Every backbone is a :class:`~diffusion_schemes_trainer.models.blocks.Backbone` (the shared noise and
class embedding) called as ``F(x, c_noise, condition=None)``. Adding one (a ``unet2d``, say) is one
module here: the network, and a config table (a :class:`~diffusion_schemes_trainer.schema.Section` with
a ``name`` literal and ``build(shape, num_classes)``) listed in :data:`MODEL_CONFIGS`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .blocks import Backbone, ClassEmbedding, NoiseEmbedding
from .conv import ConvConfig, ConvNet
from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

__all__ = ["MLP", "MODEL_CONFIGS", "Backbone", "ClassEmbedding", "ConvConfig", "ConvNet", "MLPConfig", "ModelConfig",
           "NoiseEmbedding", "UNet", "UNetConfig"]

#: Every backbone's config table; the ``[model]`` table is one of them, picked by ``name``.
MODEL_CONFIGS = (MLPConfig, ConvConfig, UNetConfig)
ModelConfig = Annotated[Union[MODEL_CONFIGS], Field(discriminator="name")]  # type: ignore[valid-type]
