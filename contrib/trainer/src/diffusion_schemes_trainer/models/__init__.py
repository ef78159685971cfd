"""The backbones, one module each, holding the network and its config table (``[model]``).

Every backbone is called as ``F(x, c_noise, condition=None)``; the trainer's own are a
:class:`~diffusion_schemes_trainer.models.blocks.Backbone` (the shared noise and class embedding).
Adding one is one module here: the network, and a config table (a :class:`~diffusion_schemes_trainer.schema.Section` with
a ``name`` literal and ``build(shape, num_classes)``) listed in :data:`MODEL_CONFIGS`. Two wrap other
libraries' networks, imported only when built: ``unet2d`` (diffusers' ``UNet2DModel``, exportable to
diffusers pipelines) and ``songunet`` (PhysicsNeMo's ``SongUNet``).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .blocks import Backbone, ClassEmbedding, NoiseEmbedding
from .conv import ConvConfig, ConvNet
from .mlp import MLP, MLPConfig
from .songunet import SongUNetBackbone, SongUNetConfig
from .unet import UNet, UNetConfig
from .unet2d import UNet2D, UNet2DConfig

__all__ = ["MLP", "MODEL_CONFIGS", "Backbone", "ClassEmbedding", "ConvConfig", "ConvNet", "MLPConfig", "ModelConfig",
           "NoiseEmbedding", "SongUNetBackbone", "SongUNetConfig", "UNet", "UNet2D", "UNet2DConfig", "UNetConfig"]

#: Every backbone's config table; the ``[model]`` table is one of them, picked by ``name``.
MODEL_CONFIGS = (MLPConfig, ConvConfig, UNetConfig, UNet2DConfig, SongUNetConfig)
ModelConfig = Annotated[Union[MODEL_CONFIGS], Field(discriminator="name")]  # type: ignore[valid-type]
