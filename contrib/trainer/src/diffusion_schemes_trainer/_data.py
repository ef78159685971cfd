"""The embedded data sets: procedural 2-D point clouds and scikit-learn's bundled 8x8 digits.

Nothing is downloaded. Every set gives a training split and two held-out splits of equal size
(``eval_a``, ``eval_b``): the distance between the two held-out splits is the floor a perfect
generator could reach with that many samples.

>>> import torch
>>> from diffusion_schemes_trainer import TwoMoons
>>> splits = TwoMoons().splits(train_size=100, eval_size=50, seed=0)
>>> splits.train.shape, splits.eval_a.shape, splits.eval_b.shape
(torch.Size([100, 2]), torch.Size([50, 2]), torch.Size([50, 2]))
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from ._errors import TrainerError
from ._mixture import GaussianMixture

__all__ = ["Checkerboard", "Digits", "MixtureData", "PointCloud", "Splits", "TwoMoons"]


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


class MixtureData(PointCloud):
    """A Gaussian mixture as a data set; :attr:`mixture` has the exact density, score and denoiser.

    >>> from diffusion_schemes_trainer import MixtureData
    >>> MixtureData(means=[[0.0, 0.0], [1.0, 1.0]], stds=[0.1, 0.2]).sample(3).shape
    torch.Size([3, 2])
    """

    def __init__(self, means: Any, stds: Any, weights: Any = None) -> None:
        self.mixture = GaussianMixture(means, stds, weights)
        self.shape = (self.mixture.dim,)
        self.num_classes = self.mixture.means.shape[0]  # the component is the class

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mixture.sample(n, generator)

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixture.sample_labelled(n, generator)


class TwoMoons(PointCloud):
    """Two interleaved half circles of radius 1 with Gaussian jitter, centred on the origin.

    Upper moon ``(cos u, sin u)``, lower moon ``(1 - cos u, 1/2 - sin u)``, ``u ~ U[0, pi]``,
    shifted by ``(-1/2, -1/4)`` so the set is centred, plus ``noise * N(0, I)``.

    >>> from diffusion_schemes_trainer import TwoMoons
    >>> TwoMoons(noise=0.0).sample(1000, torch.Generator().manual_seed(0)).mean(0).abs().max() < 0.05
    tensor(True)
    """

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = float(noise)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        lower = torch.rand(n, generator=generator) < 0.5
        x = torch.where(lower, 1 - u.cos(), u.cos()) - 0.5
        y = torch.where(lower, 0.5 - u.sin(), u.sin()) - 0.25
        jitter = torch.randn(n, 2, generator=generator, dtype=torch.float64) * self.noise
        return (torch.stack([x, y], 1) + jitter).float()


class Checkerboard(PointCloud):
    """Uniform on the dark squares of a ``squares x squares`` board of side ``size`` centred on 0.

    A point's column is uniform; its row is drawn among the rows of the same parity, so
    ``row + column`` is always even.

    >>> from diffusion_schemes_trainer import Checkerboard
    >>> x = Checkerboard(squares=4, size=4.0).sample(500, torch.Generator().manual_seed(0))
    >>> cells = ((x + 2) // 1).long()
    >>> bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())
    True
    """

    def __init__(self, squares: int = 4, size: float = 4.0) -> None:
        if squares < 2 or squares % 2:
            raise ValueError(f"squares must be an even number >= 2, got {squares}")
        self.squares, self.size = int(squares), float(size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        m = self.squares
        col = torch.randint(0, m, (n,), generator=generator)
        row = 2 * torch.randint(0, m // 2, (n,), generator=generator) + col % 2
        cell = torch.stack([col, row], 1).double()
        offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return ((cell + offset) * (self.size / m) - self.size / 2).float()


class Digits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), scaled to ``[-1, 1]``.

    Needs the ``digits`` extra (``pip install 'diffusion-schemes-trainer[digits]'``); the images
    ship inside scikit-learn, nothing is downloaded. The held-out sets are drawn first from a
    seeded permutation and the rest is the training set (``train_size`` is an upper bound).
    """

    kind = "images"
    shape: tuple[int, ...] = (1, 8, 8)
    num_classes = 10

    def splits(self, train_size: int, eval_size: int, seed: int) -> Splits:
        """Two held-out sets of ``eval_size`` images and up to ``train_size`` training images."""
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise TrainerError(
                "the digits data set needs scikit-learn, which is not installed. Install the extra: "
                "pip install 'diffusion-schemes-trainer[digits]' (or pick a 2-D data set)"
            ) from exc
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32) / 8 - 1  # pixel values 0..16
        n = images.shape[0]
        if 2 * eval_size >= n:
            raise TrainerError(f"eval_size {eval_size} leaves no training images out of {n}; use at most {n // 3}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        images = images[perm][:, None]
        labels = torch.as_tensor(digits.target, dtype=torch.long)[perm]
        parts = slice(2 * eval_size, None), slice(None, eval_size), slice(eval_size, 2 * eval_size)
        train, a, b = (images[p] for p in parts)
        y, y_a, y_b = (labels[p] for p in parts)
        return Splits(train[:train_size], a, b, y[:train_size], y_a, y_b)
