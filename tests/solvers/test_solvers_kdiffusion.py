"""The solvers k-diffusion also has give its samples on the same grid, denoiser and noise.

The denoiser is the exact one of a ring of 8 Gaussians (float64, ``diffusion_schemes.conformance.mixture``), the
grids EDM's rho = 7 ramp and VP's uniform-in-t steps, and both sides draw their noise from the
same recording noise sampler: the calls (their ``sigma, sigma_next``) must agree as well as the
samples. k-diffusion is the oracle only (``benchmarks/kdiffusion_oracle.py`` says how it is loaded).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance.mixture import GaussianMixture
from benchmarks.kdiffusion_oracle import load_sampling

K = load_sampling()


def ring(k: int = 8, radius: float = 1.0, std: float = 0.1) -> GaussianMixture:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], 1), torch.full((k,), std), torch.ones(k))


RING = ring()


class RecordingNoise:
    """``noise_sampler(sigma, sigma_next)``: a seeded sequence of standard normals; records each call."""

    def __init__(self, shape, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.shape, self.calls = shape, []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        return torch.randn(self.shape, generator=self.generator, dtype=torch.float64)


def k_model(x, sigma, **kwargs):
    return RING.denoise(x, sigma)


# (our config, k-diffusion function, its keyword arguments)
SHARED = [
    ("euler", "sample_euler", {}),
    ("heun", "sample_heun", {}),
    ("dpmpp_2m", "sample_dpmpp_2m", {}),
    ("euler_ancestral", "sample_euler_ancestral", {}),
    ({"name": "euler_ancestral", "eta": 0.5, "s_noise": 0.9}, "sample_euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("dpm_2", "sample_dpm_2", {}),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", {}),
    ({"name": "lms", "startup": "k-diffusion"}, "sample_lms", {}),
    ({"name": "lms", "order": 3, "startup": "k-diffusion"}, "sample_lms", {"order": 3}),
    ({"name": "lms", "order": 2}, "sample_lms", {"order": 2}),  # order 2 needs no Runge-Kutta start
    ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", {}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}),
    ({"name": "dpmpp_2m_sde", "solver_type": "heun"}, "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ({"name": "dpmpp_2m_sde", "eta": 0.0}, "sample_dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
    ({"name": "dpmpp_3m_sde", "eta": 0.5, "s_noise": 1.1}, "sample_dpmpp_3m_sde", {"eta": 0.5, "s_noise": 1.1}),
]


def _id(case):
    config, _, _ = case
    return config if isinstance(config, str) else "-".join(f"{v}" for v in config.values())


@pytest.mark.parametrize("schedule_name", ["edm", "vp"])
@pytest.mark.parametrize("case", SHARED, ids=_id)
def test_same_samples_as_k_diffusion(case, schedule_name):
    config, function, kwargs = case
    schedule = ds.create("noise_schedule", schedule_name)
    sigmas = schedule.sigmas(9).to(torch.float64)
    x = sigmas[0] * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours_noise, theirs_noise = RecordingNoise(x.shape), RecordingNoise(x.shape)
    denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    ours, nfe = ds.create("solver", config)(denoiser, x.clone(), sigmas, noise_sampler=ours_noise)
    extra = {"noise_sampler": theirs_noise} if "noise_sampler" in inspect.signature(getattr(K, function)).parameters else {}
    theirs = getattr(K, function)(k_model, x.clone(), sigmas, disable=True, **kwargs, **extra)
    assert ours_noise.calls == theirs_noise.calls
    assert float((ours - theirs).abs().max()) < 1e-6
    assert torch.isfinite(ours).all()


def test_dpm_adaptive_agrees_with_k_diffusion_at_tight_tolerance():
    """Both adaptive solvers (different step controllers) converge to the same ODE solution."""
    schedule = ds.create("noise_schedule", "edm")
    sigmas = schedule.sigmas(10).to(torch.float64)
    x = sigmas[0] * torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    solver = ds.create("solver", {"name": "dpm_adaptive", "rtol": 1e-6, "atol": 1e-6})
    ours, _ = solver(denoiser, x.clone(), sigmas)
    theirs = K.sample_dpm_adaptive(k_model, x.clone(), sigmas[-2], sigmas[0], rtol=1e-6, atol=1e-6, disable=True)
    theirs = RING.denoise(theirs, sigmas[-2])  # k-diffusion stops at sigma_min; the last step to 0 is ours
    assert float((ours - theirs).abs().max()) < 1e-4
