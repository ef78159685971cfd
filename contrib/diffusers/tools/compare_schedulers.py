"""Measure how far each diffusers scheduler is from its equivalent here (the table in docs/migrating-from-diffusers.md).

Run from the repository root: ``.venv/bin/python contrib/diffusers/tools/compare_schedulers.py`` (about a
minute on one CPU core). Each row runs the diffusers scheduler in its own loop and our solver through
``from_diffusers`` + ``ds.sample`` on the same seeded, bounded UNet2DModel (the tests' network), in
float64, from the same initial latent and, for the stochastic ones, the same generator; it prints the
largest absolute difference of the samples (values are O(1)).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
torch.set_num_threads(1)

import diffusers  # noqa: E402
from diffusers_nets import SHAPE, tiny_unet  # noqa: E402

import diffusion_schemes as ds  # noqa: E402
from diffusion_schemes_diffusers import from_diffusers  # noqa: E402

SCALED = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
DPM = {"name": "linspace", "round": True, "extra_point": True}
ROWS = [  # label, scheduler class, its config, our solver, our discretization
    ("EulerDiscrete", "EulerDiscreteScheduler", {}, "euler", "linspace"),
    ("EulerDiscrete, Karras sigmas", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, "euler", "karras"),
    ("EulerAncestralDiscrete", "EulerAncestralDiscreteScheduler", {}, "euler_ancestral", "linspace"),
    ("HeunDiscrete", "HeunDiscreteScheduler", {}, "heun", "linspace"),
    ("KDPM2Discrete", "KDPM2DiscreteScheduler", {}, "dpm_2", "linspace"),
    ("LMSDiscrete", "LMSDiscreteScheduler", {}, "lms", "linspace"),
    ("DPMSolverMultistep (dpmsolver++, 2)", "DPMSolverMultistepScheduler", {}, "dpmpp_2m", DPM),
    ("DPMSolverMultistep, Karras sigmas", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "dpmpp_2m", "karras"),
    ("UniPCMultistep (bh2)", "UniPCMultistepScheduler", {}, "unipc", DPM),
    ("DDIM (eta 0)", "DDIMScheduler", {}, "euler", "leading"),
    ("DDPM, clip_sample=False", "DDPMScheduler", {"clip_sample": False}, "euler_ancestral", "leading"),
]


def run(label, cls_name, config, solver, discretization, steps=10):
    scheduler = getattr(diffusers, cls_name)(**SCALED, **config)
    unet = tiny_unet(scheduler)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scheduler.set_timesteps(steps)
    z = noise * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(z, t), t).sample
            kwargs = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
            z = scheduler.step(out, t, z, **kwargs).prev_sample
    precond, schedule = from_diffusers(unet, scheduler.config)
    sigma_0 = ds.create("discretization", discretization).sigmas(steps, schedule)[0]
    start = noise * scheduler.init_noise_sigma
    if scheduler.init_noise_sigma == 1:
        start = start * (1 + sigma_0**2).sqrt()
    ours = ds.sample(precond, start, schedule, steps, solver=solver, discretization=discretization,
                     generator=torch.Generator().manual_seed(2)).samples
    return float((ours - z).abs().max())


if __name__ == "__main__":
    for row in ROWS:
        try:
            print(f"{row[0]:40s} {run(*row):.1e}")
        except Exception as exc:  # noqa: BLE001 - a scheduler that fails is a row of the table too
            print(f"{row[0]:40s} raised {type(exc).__name__}: {str(exc)[:80]}")
