"""What every data set gives: a training split and two held-out splits of equal size (:class:`Splits`).

The distance between the two held-out splits (``eval_a``, ``eval_b``) is the floor a perfect
generator could reach with that many samples. :class:`PointCloud` is the base of the procedural
sets, which draw fresh points from a seeded generator.

>>> import torch
>>> from diffusion_schemes_trainer import TwoMoons
>>> splits = TwoMoons().splits(train_size=100, eval_size=50, seed=0)
>>> splits.train.shape, splits.eval_a.shape, splits.eval_b.shape
(torch.Size([100, 2]), torch.Size([50, 2]), torch.Size([50, 2]))
"""

from __future__ import annotations

from typing import NamedTuple

import torch


__all__ = ["PointCloud", "Splits"]


class Splits(NamedTuple):
    """Training data and two disjoint held-out sets of the same size (with class labels when the set has classes)."""

    train: torch.Tensor
    eval_a: torch.Tensor
    eval_b: torch.Tensor
    train_labels: torch.Tensor | None = None
    eval_a_labels: torch.Tensor | None = None
    eval_b_labels: torch.Tensor | None = None


class PointCloud:
    """A procedural data set: ``sample(n, generator)`` draws fresh points.

    The three splits come from independent streams of one seed, so the training data of a
    run never leaks into its held-out sets.
    """

    kind = "points"
    shape: tuple[int, ...] = (2,)
    #: Number of classes (0: the set has none; class-conditional training needs some).
    num_classes = 0
    #: The width of the data's grid for bits per dimension (continuous data: 1, the density itself).
    bin_width = 1.0

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` as a draw of a density: continuous data is one already."""
        return x

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        """``n`` draws, float32, shaped ``(n, *shape)``."""
        raise NotImplementedError

    def splits(self, train_size: int, eval_size: int, seed: int) -> Splits:
        """``train_size`` training points and two held-out sets of ``eval_size`` points."""
        streams = [torch.Generator().manual_seed(seed * 3 + i) for i in range(3)]
        if not self.num_classes:
            return Splits(
                self.sample(train_size, streams[0]), self.sample(eval_size, streams[1]), self.sample(eval_size, streams[2])
            )
        (train, y), (a, y_a), (b, y_b) = (self.sample_labelled(n, g) for n, g in zip((train_size, eval_size, eval_size), streams))
        return Splits(train, a, b, y, y_a, y_b)

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws and their class labels (sets with classes only)."""
        raise NotImplementedError
