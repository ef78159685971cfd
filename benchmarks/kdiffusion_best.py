"""Test and benchmark helper: k-diffusion's most accurate deterministic sampling at a budget of evaluations.

Every deterministic sampler of k-diffusion 0.1.1.post1 (the stochastic ones with their noise
switched off, ``eta = 0``) runs on each of its own grids between the same two noise levels
(``get_sigmas_karras``, ``get_sigmas_exponential``, and ``get_sigmas_vp`` where asked), with the
largest number of steps whose evaluations fit the budget; ``sample_dpm_fast`` (which picks its own
steps) gets one evaluation less, spent on the final denoised estimate at ``sigma_min`` that every
grid ending in 0 makes. The evaluations are counted, not assumed. The error is the mean Euclidean
distance of the samples to a reference solution from the same latents; the best is the lowest.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from benchmarks.kdiffusion_oracle import load_sampling

K = load_sampling()


def _zeros(x: torch.Tensor) -> Callable:
    return lambda sigma, sigma_next: torch.zeros_like(x)


def _once(n: int) -> int:
    return n


def _twice(n: int) -> int:
    return 2 * n - 1  # the step to 0 is an Euler step


# (label, k-diffusion function, its keyword arguments, evaluations for n steps)
SAMPLERS = [
    ("euler", "sample_euler", {}, _once),
    ("heun", "sample_heun", {}, _twice),
    ("dpm_2", "sample_dpm_2", {}, _twice),
    ("lms", "sample_lms", {}, _once),
    ("dpmpp_2m", "sample_dpmpp_2m", {}, _once),
    ("dpmpp_2m_sde(eta=0)", "sample_dpmpp_2m_sde", {"eta": 0.0}, _once),
    ("dpmpp_2m_sde(eta=0, heun)", "sample_dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, _once),
    ("dpmpp_3m_sde(eta=0)", "sample_dpmpp_3m_sde", {"eta": 0.0}, _once),
    ("dpmpp_2s_ancestral(eta=0)", "sample_dpmpp_2s_ancestral", {"eta": 0.0}, _twice),
    ("dpmpp_sde(eta=0)", "sample_dpmpp_sde", {"eta": 0.0}, _twice),
]


def grids(sigma_min: float, sigma_max: float, vp: bool = False) -> dict[str, Callable[[int], torch.Tensor]]:
    """k-diffusion's grid functions between the two levels (float64), by name; ``vp`` adds ``get_sigmas_vp``."""

    def make(function: str, *args) -> Callable[[int], torch.Tensor]:
        def grid(n: int) -> torch.Tensor:
            old = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)  # k-diffusion builds its grids on torch.linspace
            try:
                return getattr(K, function)(n, *args).to(torch.float64)
            finally:
                torch.set_default_dtype(old)

        return grid

    out = {"karras": make("get_sigmas_karras", sigma_min, sigma_max),
           "exponential": make("get_sigmas_exponential", sigma_min, sigma_max)}
    if vp:
        out["vp"] = make("get_sigmas_vp")
    return out


def error(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over the batch of the Euclidean distance of each sample to its reference."""
    return float((samples - reference).to(torch.float64).flatten(1).norm(dim=1).mean())


class Counted:
    """``model(x, sigma)`` for k-diffusion, counting its calls."""

    def __init__(self, denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.denoise, self.calls = denoise, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        return self.denoise(x, sigma)


def runs(denoise, x: torch.Tensor, reference: torch.Tensor, sigma_min: float, sigma_max: float, budget: int,
         vp: bool = False) -> dict[str, dict[str, float]]:
    """``{"sampler on grid": {"error", "nfe"}}`` for every sampler and grid at ``budget`` evaluations."""
    out = {}
    for grid_name, grid in grids(sigma_min, sigma_max, vp).items():
        for label, function, kwargs, evaluations in SAMPLERS:
            steps = max(n for n in range(1, budget + 1) if evaluations(n) <= budget)
            model = Counted(denoise)
            takes_noise = "noise_sampler" in inspect.signature(getattr(K, function)).parameters
            extra = {"noise_sampler": _zeros(x)} if takes_noise else {}  # eta = 0: never used, nothing drawn
            samples = getattr(K, function)(model, x.clone(), grid(steps), disable=True, **kwargs, **extra)
            assert model.calls == evaluations(steps) <= budget, (label, model.calls, evaluations(steps))
            out[f"{label} on {grid_name}"] = {"error": error(samples, reference), "nfe": model.calls}
    model = Counted(denoise)
    last = K.sample_dpm_fast(model, x.clone(), sigma_min, sigma_max, budget - 1, disable=True)
    samples = model(last, torch.full((x.shape[0],), sigma_min, dtype=torch.float64))
    assert model.calls <= budget, ("dpm_fast", model.calls)
    out["dpm_fast"] = {"error": error(samples, reference), "nfe": model.calls}
    return out


def best(denoise, x: torch.Tensor, reference: torch.Tensor, sigma_min: float, sigma_max: float, budget: int,
         vp: bool = False) -> tuple[str, float]:
    """``(label, error)`` of k-diffusion's most accurate deterministic run at ``budget`` evaluations."""
    results = runs(denoise, x, reference, sigma_min, sigma_max, budget, vp)
    label = min(results, key=lambda k: results[k]["error"])
    return label, results[label]["error"]
