"""What every backbone shares: the noise-label embedding, the class embedding, and :class:`Backbone`.

The backbones themselves (``F(x, c_noise, condition=None)``, each a :class:`diffusion_schemes.DiffusionModel`)
live in their own modules of this package, each beside its config table.

A preconditioner calls its backbone with the scaled input ``c_in x`` and the noise label
``c_noise``, whose range depends on the scheme (``ln(sigma)/4`` in about ``[-1.6, 1.1]`` for
EDM, ``999 t`` for VP, an integer up to 999 for iDDPM). :class:`NoiseEmbedding` therefore
uses Fourier features whose periods span that whole range.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import TrainerError

__all__ = ["Backbone", "ClassEmbedding", "NoiseEmbedding", "class_labels", "refuse_condition"]


class NoiseEmbedding(nn.Module):
    """Fourier features ``[cos(2 pi c / p_i), sin(2 pi c / p_i)]`` of the noise label ``c``.

    The periods ``p_i`` are geometric from ``max_period`` down to ``min_period`` (the
    continuous form of the sinusoidal position embedding of Vaswani et al. 2017, sec. 3.5),
    so labels from about ``min_period / 10`` apart up to ``max_period`` apart are told apart.

    >>> import torch
    >>> from diffusion_schemes_trainer import NoiseEmbedding
    >>> NoiseEmbedding(frequencies=8)(torch.tensor([0.0, 1.0])).shape
    torch.Size([2, 16])
    """

    def __init__(self, frequencies: int = 32, min_period: float = 0.5, max_period: float = 4000.0) -> None:
        super().__init__()
        exponent = torch.linspace(0, 1, frequencies, dtype=torch.float64)
        periods = max_period * (min_period / max_period) ** exponent
        self.register_buffer("omega", (2 * math.pi / periods).float(), persistent=False)
        self.dim = 2 * frequencies

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """``(B,)`` labels to ``(B, 2 * frequencies)`` features (computed in float32 or wider)."""
        angle = c_noise.reshape(-1, 1).to(torch.promote_types(c_noise.dtype, torch.float32)) * self.omega
        return torch.cat([angle.cos(), angle.sin()], dim=1)


class ClassEmbedding(nn.Module):
    """A learned vector per class label ``0 .. K-1`` plus one for "no class" (label ``K``, or no condition).

    The extra row is the null condition of classifier-free guidance: the loss's condition
    dropout trains it, and guided sampling evaluates it (Ho & Salimans 2022).

    >>> import torch
    >>> from diffusion_schemes_trainer.models.blocks import ClassEmbedding
    >>> embed = ClassEmbedding(num_classes=10, dim=4)
    >>> embed(torch.tensor([3, 10]), 2).shape, torch.equal(embed(None, 2)[0], embed(torch.tensor([10]), 1)[0])
    (torch.Size([2, 4]), True)
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Any, batch: int) -> torch.Tensor:
        return self.table(class_labels(labels, self.num_classes, batch, self.table.weight.device))


def class_labels(labels: Any, num_classes: int, batch: int, device: Any) -> torch.Tensor:
    """The ``(batch,)`` integer labels of a class condition; ``None`` (no condition) is the null label ``num_classes``.

    >>> import torch
    >>> class_labels(None, 10, 2, "cpu").tolist(), class_labels(torch.tensor([3, 10]), 10, 2, "cpu").tolist()
    ([10, 10], [3, 10])
    """
    if labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64) or labels.shape != (batch,):
        raise TrainerError(
            f"a class condition must be integer labels shaped ({batch},), got "
            f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
        )
    return labels


def refuse_condition(label: str, condition: Any) -> None:
    """An unconditional backbone given a condition: the error saying how to condition on a class."""
    if condition is not None:
        raise TrainerError(
            f"the {label} backbone is unconditional; got a condition of type {type(condition).__name__} "
            "(build it with num_classes=K, or train with --class-conditional, to condition on a class)"
        )


class Backbone(nn.Module):
    """The base of the trainer's backbones: one conditioning block for all of them.

    :meth:`init_embedding` makes the noise embedding (:class:`NoiseEmbedding` and a two-layer MLP to
    ``dim``) and, with ``num_classes = K > 0``, the class embedding (:class:`ClassEmbedding`) added to
    it; :meth:`embedding` computes that vector per sample and refuses a condition when the backbone
    is unconditional. A new backbone subclasses it, calls :meth:`init_embedding` in its constructor
    and :meth:`embedding` first in its forward.

    >>> import torch
    >>> from diffusion_schemes_trainer.models.blocks import Backbone
    >>> net = Backbone()
    >>> net.init_embedding(dim=8, frequencies=4, num_classes=3)
    >>> net.embedding(torch.rand(5), torch.tensor([0, 1, 2, 3, 0]), 5, torch.float32).shape
    torch.Size([5, 8])
    """

    #: The backbone's name in error messages.
    label = "backbone"

    def init_embedding(self, dim: int, frequencies: int, num_classes: int) -> None:
        """Create ``classes`` (or None), ``embed`` and ``emb_mlp`` (the attribute names are those of the checkpoints)."""
        self.classes = ClassEmbedding(num_classes, dim) if num_classes else None
        self.embed = NoiseEmbedding(frequencies)
        self.emb_mlp = nn.Sequential(nn.Linear(self.embed.dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def embedding(self, c_noise: torch.Tensor, condition: Any, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """``(batch, dim)``: the noise label's embedding plus the class's (none without classes)."""
        emb = self.emb_mlp(self.embed(c_noise).to(dtype))
        if self.classes is None:
            refuse_condition(self.label, condition)
            return emb
        return emb + self.classes(condition, batch).to(emb.dtype)
