"""A diffusers ``UNet2DModel`` as a backbone, ``model = { name = "unet2d" }``: a run that diffusers pipelines can load.

The network is diffusers' own class, so a run trained with it is saved in diffusers' format
(``UNet2DModel.save_pretrained``) and sampled by a diffusers pipeline with this library's schemes as
its scheduler (``diffusion_schemes_diffusers.export_run``). :class:`UNet2D` calls it as the trainer
calls a backbone, ``F(x, c_noise, condition)``: ``c_noise`` is its timestep, a class condition its
``class_labels`` (one embedding row more than classes: the null label of classifier-free guidance,
as :class:`~diffusion_schemes_trainer.models.blocks.ClassEmbedding` has it).

Its time embedding is the sinusoidal one of DDPM (periods up to 10000), made for integer timesteps:
train it with the ``discrete`` scheme (a diffusers noise table, so that its c_noise is diffusers'
timestep) or ``iddpm``; EDM's ``c_noise = ln(sigma) / 4`` spans only a few units of it.

diffusers is imported when the backbone is built (the trainer's ``diffusers`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import TrainerError
from ..schema import Section
from .blocks import class_labels, refuse_condition

__all__ = ["UNet2D", "UNet2DConfig"]


class UNet2D(nn.Module):
    """A diffusers ``UNet2DModel`` called as ``F(x, c_noise, condition=None)``, returning its output's ``.sample``.

    With ``num_classes = K`` the network has ``K + 1`` class embeddings (``num_class_embeds``) and
    a missing condition is the null label ``K``; without, a condition is refused.

    >>> import torch
    >>> from diffusion_schemes_trainer.models import UNet2DConfig
    >>> net = UNet2DConfig(block_out_channels=(8, 16), norm_num_groups=4).build((1, 8, 8), num_classes=10)
    >>> net(torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0]), torch.tensor([3, 10])).shape
    torch.Size([2, 1, 8, 8])
    >>> net.unet.config.num_class_embeds                     # ten digits and the null label
    11
    """

    label = "unet2d"

    def __init__(self, unet: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        if self.num_classes:
            labels = class_labels(condition, self.num_classes, x.shape[0], x.device)
        else:
            refuse_condition(self.label, condition)
            labels = None
        return self.unet(x, c_noise, class_labels=labels).sample


class UNet2DConfig(Section):
    """diffusers' ``UNet2DModel`` (images; exportable to diffusers pipelines); its fields are diffusers' names."""

    name: Literal["unet2d"] = "unet2d"
    block_out_channels: tuple[int, ...] = Field(
        (32, 64), min_length=1, description="Channels of each level (each level but the last halves the resolution)."
    )
    down_block_types: tuple[str, ...] = Field(
        ("DownBlock2D", "AttnDownBlock2D"), min_length=1, description="diffusers' down block of each level."
    )
    up_block_types: tuple[str, ...] = Field(
        ("AttnUpBlock2D", "UpBlock2D"), min_length=1, description="diffusers' up block of each level, deepest first."
    )
    layers_per_block: int = Field(1, ge=1, description="Residual layers per down block (one more per up block).")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every level's channels.")
    attention_head_dim: int = Field(8, ge=1, description="Channels per attention head in the attention blocks.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the residual layers.")

    @model_validator(mode="after")
    def _levels_agree(self) -> UNet2DConfig:
        levels = len(self.block_out_channels)
        if len(self.down_block_types) != levels or len(self.up_block_types) != levels:
            raise ValueError(
                f"block_out_channels has {levels} levels but down_block_types {len(self.down_block_types)} and "
                f"up_block_types {len(self.up_block_types)}: give one block type per level"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide the channels {bad}; pick a divisor")
        return self

    def build(self, shape: Sequence[int], num_classes: int = 0) -> Any:
        """The backbone for images of per-sample ``shape`` ``(C, H, W)`` (class-conditional when ``num_classes``)."""
        if len(shape) != 3:
            raise TrainerError(f"the unet2d backbone needs images shaped (C, H, W), got data of shape {tuple(shape)}")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if shape[1] % factor or shape[2] % factor:
            raise TrainerError(
                f"the unet2d backbone halves the resolution {len(self.block_out_channels) - 1} times, so the image sides "
                f"must be multiples of {factor}; got {tuple(shape[1:])}: use fewer block_out_channels"
            )
        try:
            from diffusers import UNet2DModel
        except ImportError:
            raise TrainerError(
                "the unet2d backbone is diffusers' UNet2DModel, and diffusers is not installed: "
                "pip install 'diffusion-schemes-trainer[diffusers]' (or diffusion-schemes-diffusers, which also exports runs)"
            ) from None
        try:
            unet = UNet2DModel(
                sample_size=shape[1] if shape[1] == shape[2] else tuple(shape[1:]), in_channels=shape[0],
                out_channels=shape[0], block_out_channels=self.block_out_channels,
                down_block_types=self.down_block_types, up_block_types=self.up_block_types,
                layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                attention_head_dim=self.attention_head_dim, dropout=self.dropout,
                num_class_embeds=num_classes + 1 if num_classes else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise TrainerError(f"invalid model.unet2d: {exc}") from None
        return UNet2D(unet, num_classes)

    def floats_per_sample(self, shape: Sequence[int]) -> int:
        """About how many activations one sample keeps for the backward pass (a bound for memory checks):
        every layer at the widest level's width and full resolution, and one attention matrix per layer."""
        pixels = math.prod(shape[1:])
        layers = len(self.block_out_channels) * (2 * self.layers_per_block + 1) + 2
        return layers * (12 * max(self.block_out_channels) * pixels + pixels**2) + 4 * math.prod(shape)
