"""Noise samplers for the stochastic solvers: ``noise_sampler(sigma, sigma_next)`` returns standard normal noise.

:func:`diffusion_schemes.sample` passes ``noise_sampler=`` to the solver, which calls it once
per step where it adds noise (k-diffusion's convention). Without one, the noise is drawn from
``generator`` independently at every step. :class:`BrownianTreeNoiseSampler` instead takes
every step's noise from one Brownian motion ``W`` in the noise level, as the increment
``(W(sigma) - W(sigma_next)) / sqrt(sigma - sigma_next)``: standard normal for each step,
independent across disjoint steps, and consistent between grids, so that the samples of an SDE
solver converge as the steps get finer instead of changing with every grid. It needs the
``torchsde`` package (``pip install 'diffusion-schemes[sde]'``), imported only when a sampler is made.

>>> import torch
>>> import diffusion_schemes as ds
>>> from diffusion_schemes.solvers.noise_samplers import BrownianTreeNoiseSampler
>>> schedule = ds.create("noise_schedule", "edm")
>>> latents = schedule.init_latents((3, 2), generator=torch.Generator().manual_seed(0))
>>> noise = BrownianTreeNoiseSampler(latents, sigma_min=0.002, sigma_max=80.0, seed=1)
>>> x0_predictor = lambda x, t: torch.zeros_like(x)
>>> a = ds.sample(x0_predictor, latents, schedule, 8, solver="euler_maruyama", noise_sampler=noise).samples
>>> b = ds.sample(x0_predictor, latents, schedule, 8, solver="euler_maruyama", noise_sampler=noise).samples
>>> bool(torch.equal(a, b))                         # the same tree gives the same noise
True

:func:`normal_noise` draws the default noise (and :meth:`~diffusion_schemes.NoiseSchedule.init_latents`'
latents) from one generator or from one generator per sample, so that a sample's noise depends on
its own generator only, not on the batch it is drawn in (the way to split a seeded batch over
several processes and get the same samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffusion_schemes.errors import DiffusionSchemesError
from diffusion_schemes.tensors import GeneratorArg, check_generator, normal_noise

__all__ = ["BrownianTreeNoiseSampler", "GeneratorArg", "check_generator", "normal_noise"]  # the last three: tensors'

def _import_torchsde() -> Any:
    try:
        import torchsde
    except ImportError:  # pragma: no cover - depends on the environment
        raise DiffusionSchemesError(
            "BrownianTreeNoiseSampler needs the torchsde package: pip install 'diffusion-schemes[sde]'"
        ) from None
    return torchsde


class BrownianTreeNoiseSampler:
    """Noise from one Brownian motion in ``t = transform(sigma)``, on ``torchsde.BrownianTree``.

    Args:
        x: a tensor shaped like the noise (the latents): its shape, dtype and device are used.
        sigma_min, sigma_max: the range of noise levels the solver will query (``sigma_min`` may
            be 0 with the default transform); queries are clipped to it.
        seed: an int (one tree for the whole batch), a sequence of ints (one tree per sample along
            the first dimension, so a sample's noise does not depend on the rest of its batch), or
            None (a seed drawn from torch's global generator).
        transform: maps a noise level to the tree's time (default: the noise level itself); it
            must be monotone.

    A call ``sampler(sigma, sigma_next)`` returns ``(W(b) - W(a)) / sqrt(b - a)`` with
    ``a < b`` the two transformed noise levels.

    >>> import torch
    >>> from diffusion_schemes.solvers.noise_samplers import BrownianTreeNoiseSampler
    >>> sampler = BrownianTreeNoiseSampler(torch.zeros(2, 3), 0.0, 10.0, seed=[1, 2])
    >>> first, second = sampler(4.0, 2.0), sampler(2.0, 1.0)
    >>> first.shape, bool(torch.equal(first, sampler(4.0, 2.0)))
    (torch.Size([2, 3]), True)
    >>> alone = BrownianTreeNoiseSampler(torch.zeros(1, 3), 0.0, 10.0, seed=[2])(4.0, 2.0)
    >>> bool(torch.allclose(alone[0], first[1]))        # per-sample seeds: independent of the batch
    True
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: float,
        sigma_max: float,
        seed: int | Sequence[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        torchsde = _import_torchsde()
        self.transform = transform if transform is not None else (lambda sigma: sigma)
        self.shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        ends = [float(self.transform(torch.as_tensor(float(s), dtype=torch.float64))) for s in (sigma_min, sigma_max)]
        self.t0, self.t1 = min(ends), max(ends)
        if not (math.isfinite(self.t0) and math.isfinite(self.t1) and self.t0 < self.t1):
            raise DiffusionSchemesError(
                f"BrownianTreeNoiseSampler needs sigma_min < sigma_max with finite transformed ends; got "
                f"sigma_min={sigma_min}, sigma_max={sigma_max} (transformed: {ends})"
            )
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()).item())
        if isinstance(seed, int):
            w0 = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            self.trees = [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=seed)]
            self.batched = False
        else:
            seeds = [int(s) for s in seed]
            if not self.shape or len(seeds) != self.shape[0]:
                raise DiffusionSchemesError(
                    f"{len(seeds)} seeds were given for a batch of {self.shape[0] if self.shape else 0}; "
                    "give one seed per sample along the first dimension, or a single int"
                )
            w0 = torch.zeros(self.shape[1:], dtype=self.dtype, device=self.device)
            self.trees = [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=s) for s in seeds]
            self.batched = True

    def __call__(self, sigma: Any, sigma_next: Any) -> torch.Tensor:
        ta = float(self.transform(torch.as_tensor(sigma, dtype=torch.float64)))
        tb = float(self.transform(torch.as_tensor(sigma_next, dtype=torch.float64)))
        a, b = (min(max(t, self.t0), self.t1) for t in sorted((ta, tb)))
        if not b > a:
            raise DiffusionSchemesError(
                f"the step from sigma={float(sigma):g} to sigma_next={float(sigma_next):g} has no length inside the "
                f"tree's range; make the sampler with sigma_min and sigma_max covering the grid"
            )
        increments = [tree(a, b) for tree in self.trees]
        w = torch.stack(increments) if self.batched else increments[0]
        return w / math.sqrt(b - a)
