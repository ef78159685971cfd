"""Large domains by patches: a denoiser evaluated on overlapping windows of a latent, averaged.

MultiDiffusion (Bar-Tal et al. 2023, eq. 3-5) fuses the estimates of several windows of one
large latent by the least-squares solution of their disagreement, which for uniform weights is
the per-element average over the windows that cover it. Applied to the denoised estimate at
every evaluation, with a network that sees only ``patch_size`` at a time:

    D(x; sigma)[i] = mean over the windows w containing i of D_net(x[w]; sigma)[i - start(w)].

Windows of ``patch_size`` start every ``patch_size - overlap`` elements along each patched
dimension, the last one flush with the end, so every element is covered. With
``random_offsets=True`` the grid of windows is shifted by a random amount below the stride at
every evaluation (clamped at the borders, one window more per dimension so that their number
stays fixed), which moves the seams between evaluations.

For a network whose output at each position depends only on the input at that position, every
window gives the same value there and patched sampling equals unpatched sampling.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> pointwise = lambda x, t: x / (1 + t[:, None, None, None] ** 2)       # data N(0, I), per pixel
>>> whole = schedule.get_denoiser(x0_predictor=pointwise)
>>> patched = ds.Patched(whole, patch_size=8, overlap=2)
>>> patched.evaluations_per_call((1, 3, 16, 16))                         # windows at 0, 6 and 8
9
>>> latents = schedule.init_latents((2, 3, 16, 16), generator=torch.Generator().manual_seed(0))
>>> plain, by_patches = ds.sample(whole, latents, schedule, 10), ds.sample(patched, latents, schedule, 10)
>>> torch.allclose(plain.samples, by_patches.samples, atol=1e-6), plain.nfe, by_patches.nfe
(True, 19, 171)
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from diffusion_schemes.sampling.denoiser import Denoiser
from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["Patched"]


def _sizes(value: Any, what: str) -> tuple[int, ...]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ArgumentTypeError(f"{what} must be an int or a tuple of ints, got {value!r}")
    return tuple(values)


class Patched(Denoiser):
    """A :class:`~diffusion_schemes.Denoiser` that evaluates ``denoiser`` on overlapping patches and averages them.

    Args:
        denoiser: the network's denoiser, ``schedule.get_denoiser(x0_predictor=model)`` (or any
            other predictor), for inputs of ``patch_size``.
        patch_size: the window: an int for every dimension after (batch, channels), or a tuple
            for the trailing dimensions.
        overlap: elements shared by neighbouring windows (an int or a tuple like
            ``patch_size``), ``0 <= overlap < patch_size``; the stride is ``patch_size - overlap``.
        random_offsets: shift the grid of windows by a random amount at every evaluation.
        generator: a CPU ``torch.Generator`` for the offsets.

    :func:`~diffusion_schemes.sample`'s ``nfe`` counts patch evaluations:
    :meth:`evaluations_per_call` per evaluation of ``D``. All patches of a batch go through the
    network as one batch of ``patches x B``; the condition of a sample goes with each of its patches.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=lambda x, t: x)
    >>> ds.Patched(denoiser, 8, overlap=8)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: overlap must satisfy 0 <= overlap < patch_size, got overlap (8,) ...
    """

    def __init__(
        self,
        denoiser: Denoiser,
        patch_size: Any,
        overlap: Any = 0,
        *,
        random_offsets: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(denoiser, Denoiser):
            raise ArgumentTypeError(
                f"Patched wraps a Denoiser, got {type(denoiser).__name__}; build one with "
                "schedule.get_denoiser(x0_predictor=model)"
            )
        size = _sizes(patch_size, "patch_size")
        lap = _sizes(overlap, "overlap")
        if len(lap) == 1 and len(size) > 1:
            lap = lap * len(size)
        if len(size) == 1 and len(lap) > 1:
            size = size * len(lap)
        if len(lap) != len(size):
            raise InvalidArgumentError(f"overlap {lap} and patch_size {size} name different numbers of dimensions")
        if any(s < 1 for s in size):
            raise InvalidArgumentError(f"patch_size must be >= 1, got {size}")
        if any(not 0 <= o < s for o, s in zip(lap, size)):
            raise InvalidArgumentError(
                f"overlap must satisfy 0 <= overlap < patch_size, got overlap {lap} for patch_size {size}"
            )
        super().__init__(
            denoiser.schedule, denoiser.predictor, denoiser.prediction_type, denoiser.denoising_type, denoiser.condition
        )
        self.base, self.patch_size, self.overlap = denoiser, size, lap
        self.every_dimension = not isinstance(patch_size, (tuple, list)) and not isinstance(overlap, (tuple, list))
        self.random_offsets, self.generator = bool(random_offsets), generator

    def __repr__(self) -> str:
        shown = f"patch_size={self.patch_size}, overlap={self.overlap}"
        if self.random_offsets:
            shown += ", random_offsets=True"
        return f"Patched({shown}, base={self.base!r})"

    def with_condition(self, condition: Any) -> Patched:
        """A copy that passes ``condition`` to every patch of its sample."""
        size, lap = (self.patch_size[0], self.overlap[0]) if self.every_dimension else (self.patch_size, self.overlap)
        return Patched(self.base.with_condition(condition), size, lap,
                       random_offsets=self.random_offsets, generator=self.generator)

    def parameter(self) -> torch.Tensor | None:
        return self.base.parameter()

    def _dims(self, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
        """``(length, patch, stride)`` for each patched dimension of a latent of ``shape``."""
        n = len(shape) - 2 if self.every_dimension else len(self.patch_size)
        if n < 1 or n > len(shape) - 1:
            raise InvalidArgumentError(
                f"cannot patch a latent of shape {tuple(shape)} with patch_size {self.patch_size}: an int patches "
                "every dimension after (batch, channels); give a tuple for the trailing dimensions"
            )
        size = self.patch_size * n if self.every_dimension else self.patch_size
        lap = self.overlap * n if self.every_dimension else self.overlap
        lengths = tuple(shape[-n:])
        if any(length < p for length, p in zip(lengths, size)):
            raise InvalidArgumentError(f"the latent's trailing dimensions {lengths} are smaller than patch_size {size}")
        return tuple((length, p, p - o) for length, p, o in zip(lengths, size, lap))

    def _count(self, length: int, patch: int, stride: int) -> int:
        windows = math.ceil((length - patch) / stride) + 1
        return windows + 1 if self.random_offsets and length > patch else windows

    def evaluations_per_call(self, shape: Any) -> int:
        """The number of patches (network evaluations per sample) of one evaluation on a latent of ``shape``."""
        return math.prod(self._count(*dim) for dim in self._dims(tuple(shape)))

    def _starts(self, length: int, patch: int, stride: int) -> list[int]:
        offset = 0
        if self.random_offsets and length > patch:
            offset = int(torch.randint(stride, (), generator=self.generator))  # a CPU draw: no device sync
        return [min(max(k * stride - offset, 0), length - patch) for k in range(self._count(length, patch, stride))]

    def x0_given(self, x: torch.Tensor, sigma: Any, condition: Any) -> torch.Tensor:
        """``D(x; sigma)``: the average of the wrapped denoiser's estimates on the patches covering each element."""
        dims = self._dims(tuple(x.shape))
        sigma = torch.as_tensor(sigma, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        lead = (slice(None),) * (x.ndim - len(dims))
        windows = [
            lead + tuple(slice(s, s + p) for s, (_, p, _) in zip(starts, dims))
            for starts in itertools.product(*(self._starts(*dim) for dim in dims))
        ]
        count = len(windows)
        batch = torch.cat([x[w] for w in windows])
        repeated = None if condition is None else torch.cat([condition] * count)
        out = self.base.x0_given(batch, sigma.repeat(count), repeated).chunk(count)
        total = torch.zeros_like(x)
        covered = torch.zeros(x.shape[-len(dims):], dtype=x.dtype, device=x.device)
        for w, part in zip(windows, out):
            total[w] += part
            covered[w[len(lead):]] += 1
        return total / covered
