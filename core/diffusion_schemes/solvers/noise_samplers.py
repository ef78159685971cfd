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

from diffusion_schemes.errors import ArgumentTypeError, DiffusionSchemesError

__all__ = ["BrownianTreeNoiseSampler", "check_generator", "normal_noise"]

#: ``generator=`` where noise is drawn: None (torch's global generator), one ``torch.Generator``, or one per sample.
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def _on_device(generator: torch.Generator, device: torch.device) -> bool:
    """Whether ``generator`` draws on ``device`` (an index left out, as in ``"cuda"``, means the current one)."""
    own = generator.device
    if own.type != device.type:
        return False
    return own.index is None or device.index is None or own.index == device.index


def check_generator(generator: Any, shape: Sequence[int], device: Any = None) -> GeneratorArg:
    """``generator`` checked for drawing noise of ``shape`` on ``device``; a list or tuple comes back as a tuple.

    One generator (or None) draws the whole tensor. A list or tuple must hold one
    ``torch.Generator`` per sample along the first dimension of ``shape``, each on ``device``
    (None: torch's default device); anything else raises :class:`ArgumentTypeError` saying what to
    pass. The check reads no tensor, so it costs nothing on the device.

    >>> import torch
    >>> check_generator([torch.Generator()] * 2, (3, 4))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: 2 generators were given for a batch of 3 samples; pass one torch.Generator per sample along the first dimension (a list of 3), or a single generator
    """
    device = torch.get_default_device() if device is None else torch.device(device)
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        gens: tuple[torch.Generator, ...] = (generator,)
    elif isinstance(generator, (list, tuple)):
        gens = tuple(generator)
        batch = shape[0] if len(shape) else None
        if batch is None or len(gens) != batch:
            raise ArgumentTypeError(
                f"{len(gens)} generators were given for "
                + (f"a batch of {batch} samples" if batch is not None else "a tensor without a batch dimension")
                + f"; pass one torch.Generator per sample along the first dimension (a list of {batch or 'B'}), "
                "or a single generator"
            )
        for i, g in enumerate(gens):
            if not isinstance(g, torch.Generator):
                raise ArgumentTypeError(
                    f"generator[{i}] is a {type(g).__name__}, but every item of a per-sample generator list must be "
                    "a torch.Generator (e.g. torch.Generator(device).manual_seed(seed_i))"
                )
    else:
        raise ArgumentTypeError(
            f"generator must be None, a torch.Generator or a list of one torch.Generator per sample, got "
            f"{type(generator).__name__}"
        )
    for i, g in enumerate(gens):
        if not _on_device(g, device):
            where = "generator" if isinstance(generator, torch.Generator) else f"generator[{i}]"
            raise ArgumentTypeError(
                f"{where} draws on {g.device} but the noise is drawn on {device}; make it with "
                f"torch.Generator(device={str(device)!r})"
            )
    return generator if isinstance(generator, torch.Generator) else gens


def normal_noise(
    shape: Sequence[int], generator: GeneratorArg = None, *, device: Any = None, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape``: from ``generator``, or sample ``i`` from ``generator[i]`` alone.

    With one generator per sample (a list or tuple, checked by :func:`check_generator`), row ``i``
    is what ``generator[i]`` draws for one sample's shape ``shape[1:]``, so the same generators give
    the same rows in a batch of any size or order: a batch split in parts, with the matching
    generators, gives the same tensor bit for bit. The rows are drawn one after another (a loop
    over the generators, with no read of the device).

    >>> import torch
    >>> from diffusion_schemes.solvers.noise_samplers import normal_noise
    >>> gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    >>> whole = normal_noise((3, 2), gens([7, 8, 9]))
    >>> parts = torch.cat([normal_noise((1, 2), gens([7])), normal_noise((2, 2), gens([8, 9]))])
    >>> bool(torch.equal(whole, parts))
    True
    >>> bool(torch.equal(whole[1], torch.randn(2, generator=torch.Generator().manual_seed(8))))
    True
    """
    shape = tuple(shape)
    gens = check_generator(generator, shape, device)
    if gens is None or isinstance(gens, torch.Generator):
        return torch.randn(shape, generator=gens, device=device, dtype=dtype)
    out = torch.empty(shape, device=device, dtype=dtype)
    for row, g in zip(out, gens):
        row.normal_(generator=g)
    return out


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
