"""How likely held-out data is under a model: negative log-likelihood in bits per dimension, and its floor.

:func:`held_out_nll` runs :func:`diffusion_schemes.log_likelihood` (the probability-flow ODE
with fixed Runge-Kutta 4 steps, so every chunk of points costs the same model calls) on held-out
points and reports the mean in bits per dimension with the data's grid (digits: one grey level,
after uniform dequantisation; 2-D sets: ``bin_width`` 1, the density itself). Where the data's own
density is known (the Gaussian mixture, two moons, the checkerboard: ``data.log_prob(x, sigma)``)
it also reports ``nll_bpd_floor``, that density on the same points, convolved with
``N(0, sigma_min^2 I)`` because the ODE gives the model's density at ``sigma_min``. Averaged over
draws of the data, ``nll_bpd - nll_bpd_floor`` estimates ``KL(data || model) / (D ln 2)``.

The points are cut into chunks of a fixed size; chunk ``k`` has its own generator (dequantisation
noise, Hutchinson probes) seeded by ``(seed, k)``, so the result does not depend on how chunks are
shared among processes: rank ``r`` of ``W`` takes chunks ``r, r + W, ...`` and rank 0 gathers.

>>> import torch
>>> import diffusion_schemes as ds
>>> from diffusion_schemes_trainer import MixtureData
>>> from diffusion_schemes_trainer.evaluation import exact_predictor
>>> from diffusion_schemes_trainer.likelihood import held_out_nll
>>> data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.1])
>>> points = data.splits(train_size=10, eval_size=64, seed=0).eval_a
>>> schedule = ds.create("noise_schedule", "edm")
>>> r = held_out_nll(exact_predictor(data.mixture, schedule), schedule, data, points, num_steps=32)
>>> abs(r["nll_bpd"] - r["nll_bpd_floor"]) < 0.01     # the exact denoiser's density is the data's
True
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch

import diffusion_schemes as ds

from .errors import TrainerError

__all__ = ["CHUNK", "chunk_generator", "data_log_prob", "default_divergence", "held_out_nll", "nll_calls"]

#: Points per chunk: each chunk is one batch through the ODE with its own generator.
CHUNK = 256
#: Up to this many dimensions the exact trace is the default (one backward pass per dimension).
EXACT_UP_TO = 16


def chunk_generator(seed: int, index: int) -> torch.Generator:
    """The generator of chunk ``index``: a function of ``(seed, index)`` only, whatever process runs it."""
    digest = hashlib.sha256(f"nll:{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def default_divergence(data: Any) -> str:
    """``"exact"`` for data of at most :data:`EXACT_UP_TO` dimensions, else ``"hutchinson"``."""
    return "exact" if math.prod(data.shape) <= EXACT_UP_TO else "hutchinson"


def data_log_prob(data: Any, x: torch.Tensor, sigma: float) -> torch.Tensor | None:
    """The data's own ``log p(x; sigma)`` (float64, shape ``(B,)``), or None when the set has no known density."""
    log_prob = getattr(data, "log_prob", None)
    return None if log_prob is None else log_prob(x, sigma)


def nll_calls(num_points: int, num_steps: int, rank: int = 0, world_size: int = 1) -> int:
    """Model calls :func:`held_out_nll` makes on ``rank`` (for a progress bar): four per RK4 step per chunk."""
    chunks = math.ceil(num_points / CHUNK)
    return len(range(rank, chunks, world_size)) * 4 * num_steps


def held_out_nll(
    model: Any,
    schedule: Any,
    data: Any,
    points: torch.Tensor,
    *,
    divergence: str | None = None,
    num_probes: int = 1,
    num_steps: int = 32,
    seed: int = 0,
    device: Any = "cpu",
    condition: torch.Tensor | None = None,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Negative log-likelihood of ``points`` under ``model`` (a preconditioner or x0-predictor) in bits per dimension.

    ``divergence``: ``"exact"`` or ``"hutchinson"`` (``num_probes`` Rademacher probes); None picks
    :func:`default_divergence`. ``num_steps``: fixed RK4 steps in ``ln sigma`` between the
    schedule's sampling range. Under several processes pass ``rank``, ``world_size`` and ``gather``
    (a function from this rank's object to the list of every rank's, on rank 0 at least); ranks
    other than 0 get ``{}``. ``callback``: after every model call (a progress bar).

    Returns ``nll_bpd`` (the mean), ``nll_bpd_stderr`` (its standard error over points),
    ``nll_bpd_floor`` (None without a known density), ``nll_num_samples``, ``nll_divergence``,
    ``nll_probes``, ``nll_steps``, ``nll_nfe`` (model calls, each on one chunk), ``nll_sigma_min``,
    ``nll_seconds`` (this rank's).
    """
    divergence = default_divergence(data) if divergence is None else divergence
    if num_steps < 1 or num_probes < 1:
        raise TrainerError(f"the likelihood needs steps >= 1 and probes >= 1, got {num_steps} and {num_probes}")
    grid = schedule.sigmas(2)
    sigma_max, sigma_min = float(grid[0]), float(grid[1])
    t0 = time.perf_counter()
    mine: list[tuple[int, torch.Tensor, torch.Tensor | None, int]] = []
    chunks = list(enumerate(points.split(CHUNK)))
    if condition is not None:
        conditions = condition.split(CHUNK)
    for k, x in chunks[rank::world_size]:
        g = chunk_generator(seed, k)
        x = data.dequantize(x, g).to(device)
        result = ds.log_likelihood(
            model, x, schedule, condition=None if condition is None else conditions[k].to(device),
            sigma_min=sigma_min, sigma_max=sigma_max, divergence=divergence, num_probes=num_probes,
            num_steps=num_steps, generator=g if divergence == "hutchinson" else None, callback=callback,
        )
        floor = data_log_prob(data, x.cpu(), sigma_min)
        bpd = lambda log_prob: -(log_prob.double().cpu() + result.dim * math.log(data.bin_width)) / (  # noqa: E731
            result.dim * math.log(2))
        mine.append((k, bpd(result.log_prob), None if floor is None else bpd(floor), result.nfe))
    seconds = time.perf_counter() - t0
    parts = gather(mine) if gather is not None else [mine]
    if rank != 0:
        return {}
    done = sorted((item for part in parts for item in part), key=lambda item: item[0])
    values = torch.cat([item[1] for item in done])
    floors = [item[2] for item in done]
    n = values.numel()
    return {
        "nll_bpd": float(values.mean()),
        "nll_bpd_stderr": float(values.std() / math.sqrt(n)) if n > 1 else None,
        "nll_bpd_floor": None if any(f is None for f in floors) else float(torch.cat(floors).mean()),
        "nll_num_samples": n,
        "nll_divergence": divergence,
        "nll_probes": num_probes if divergence == "hutchinson" else None,
        "nll_steps": num_steps,
        "nll_nfe": sum(item[3] for item in done),
        "nll_sigma_min": sigma_min,
        "nll_seconds": seconds,
    }
