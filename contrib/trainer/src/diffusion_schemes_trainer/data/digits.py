"""scikit-learn's bundled 8x8 handwritten digits (the ``digits`` extra), with its config table."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..errors import TrainerError
from ..schema import Section
from .base import Splits

__all__ = ["Digits", "DigitsConfig"]


class Digits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), scaled to ``[-1, 1]``.

    Needs the ``digits`` extra (``pip install 'diffusion-schemes-trainer[digits]'``); the images
    ship inside scikit-learn, nothing is downloaded. The held-out sets are drawn first from a
    seeded permutation and the rest is the training set (``train_size`` is an upper bound).
    """

    kind = "images"
    shape: tuple[int, ...] = (1, 8, 8)
    num_classes = 10
    #: One grey level in ``[-1, 1]``: the 17 pixel values 0..16 are ``k / 8 - 1``.
    bin_width = 1 / 8

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform noise of one grey level around each pixel value, so the images become draws of a density.

        A model's density integrated over a pixel's bin bounds the probability of that discrete
        value (Theis et al. 2016), so bits per dimension with ``bin_width`` are comparable
        across models.

        >>> x = torch.tensor([[-1.0, 0.0, 1.0]])
        >>> y = Digits().dequantize(x, torch.Generator().manual_seed(0))
        >>> bool(((y - x).abs() <= Digits.bin_width / 2).all() and torch.equal(((y + 1) * 8).round() / 8 - 1, x))
        True
        """
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + (u - 0.5) * self.bin_width

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


class DigitsConfig(Section):
    """scikit-learn's bundled 8x8 digits, scaled to [-1, 1] (needs the ``digits`` extra)."""

    name: Literal["digits"] = "digits"
    train_size: int = Field(1797, ge=1, description="At most this many training images (what the held-out sets leave).")
    eval_size: int = Field(300, ge=16, description="Images in each of the two held-out sets.")

    default_model: ClassVar[str] = "unet"

    def build(self) -> Any:
        """The data set (a :class:`Digits`)."""
        return Digits()
