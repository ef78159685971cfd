"""NVIDIA PhysicsNeMo's ``SongUNet`` as a backbone, ``model = { name = "songunet" }``, when PhysicsNeMo is installed.

``SongUNet`` (the DDPM++/NCSN++ network of Song et al. 2021, as EDM and CorrDiff use it) is called
as ``net(x, noise_labels, class_labels=...)`` with class labels as vectors of ``label_dim``
entries. :class:`SongUNetBackbone` turns the trainer's integer class labels into one-hot vectors
with one entry more than classes (the null label of classifier-free guidance, as
:class:`~diffusion_schemes_trainer.models.blocks.ClassEmbedding` has it) and calls the network
through ``diffusion_schemes_physicsnemo.ClassLabelsAdapter``.

PhysicsNeMo and the adapter are imported when the backbone is built; where they are missing (or
PhysicsNeMo cannot import on this torch), building it is a :class:`TrainerError` naming what to install.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import TrainerError
from ..schema import Section
from .blocks import class_labels, refuse_condition

__all__ = ["INSTALL", "SongUNetBackbone", "SongUNetConfig"]

#: What to install for the songunet backbone.
INSTALL = "pip install 'diffusion-schemes-physicsnemo[physicsnemo]'"


def _song_unet_class() -> tuple[Any, Any]:
    """``(SongUNet, ClassLabelsAdapter)``, or a TrainerError naming what to install."""
    try:
        from diffusion_schemes_physicsnemo import ClassLabelsAdapter
        from physicsnemo.models.diffusion_unets import SongUNet
    except (ImportError, RuntimeError, OSError) as exc:  # PhysicsNeMo on another torch fails with RuntimeError
        raise TrainerError(
            f"the songunet backbone is NVIDIA PhysicsNeMo's SongUNet, which cannot be imported here "
            f"({type(exc).__name__}: {exc}); install it with {INSTALL} (PhysicsNeMo 2.2.2 needs torch 2.14.1 and "
            "torchvision 0.29.1: use its own environment, `make physicsnemo-test` builds one), or train with "
            "--model unet"
        ) from None
    return SongUNet, ClassLabelsAdapter


class SongUNetBackbone(nn.Module):
    """A PhysicsNeMo ``SongUNet`` called as ``F(x, c_noise, condition=None)`` through ``ClassLabelsAdapter``.

    With ``num_classes = K`` the network has ``label_dim = K + 1`` and a label ``k`` is the one-hot
    vector ``e_k``; a missing condition is the null label ``K``. Without, a condition is refused.
    """

    label = "songunet"

    def __init__(self, net: nn.Module, adapter: Any, num_classes: int = 0) -> None:
        super().__init__()
        self.net = adapter(net)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        if self.num_classes:
            labels = class_labels(condition, self.num_classes, x.shape[0], x.device)
            condition = nn.functional.one_hot(labels, self.num_classes + 1).to(x.dtype)
        else:
            refuse_condition(self.label, condition)
        return self.net(x, c_noise.reshape(-1).expand(x.shape[0]), condition)


class SongUNetConfig(Section):
    """PhysicsNeMo's SongUNet (images; needs PhysicsNeMo); its fields are PhysicsNeMo's names."""

    name: Literal["songunet"] = "songunet"
    model_channels: int = Field(16, ge=1, description="Channels of the first level.")
    channel_mult: tuple[int, ...] = Field((1, 2), min_length=1, description="Channel multiplier of each level (each halves the resolution).")
    num_blocks: int = Field(1, ge=1, description="Residual blocks per level.")
    attn_resolutions: tuple[int, ...] = Field((4,), description="Resolutions with self-attention.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the residual blocks.")
    embedding_type: Literal["positional", "fourier"] = Field(
        "positional", description="Noise embedding: 'positional' (DDPM++, VP) or 'fourier' (NCSN++, VE)."
    )

    def build(self, shape: Sequence[int], num_classes: int = 0) -> Any:
        """The backbone for square images of per-sample ``shape`` ``(C, H, W)`` (class-conditional when ``num_classes``)."""
        if len(shape) != 3 or shape[1] != shape[2]:
            raise TrainerError(f"the songunet backbone needs square images shaped (C, H, W), got data of shape {tuple(shape)}")
        song_unet, adapter = _song_unet_class()
        try:
            net = song_unet(
                img_resolution=shape[1], in_channels=shape[0], out_channels=shape[0],
                label_dim=num_classes + 1 if num_classes else 0, model_channels=self.model_channels,
                channel_mult=list(self.channel_mult), num_blocks=self.num_blocks,
                attn_resolutions=list(self.attn_resolutions), dropout=self.dropout, embedding_type=self.embedding_type,
            )
        except (ValueError, TypeError, AssertionError) as exc:
            raise TrainerError(f"invalid model.songunet: {exc}") from None
        return SongUNetBackbone(net, adapter, num_classes)

    def floats_per_sample(self, shape: Sequence[int]) -> int:
        """About how many activations one sample keeps for the backward pass (a bound for memory checks)."""
        pixels = math.prod(shape[1:])
        blocks = len(self.channel_mult) * (2 * self.num_blocks + 1) + 2
        return blocks * (12 * self.model_channels * max(self.channel_mult) * pixels + pixels**2) + 4 * math.prod(shape)
