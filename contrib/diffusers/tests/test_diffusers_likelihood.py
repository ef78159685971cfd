"""A diffusers model scored by likelihood here: ``ds.log_likelihood`` on ``from_diffusers``, Hutchinson against the exact trace.

With fixed Runge-Kutta steps the path of ``x`` does not depend on the probes, and the accumulated
divergence is a fixed linear combination of ``tr(dD/dx)`` at the steps' evaluations; Hutchinson's
``v^T (dD/dx) v`` is unbiased for each trace (``E[v v^T] = I``), so the Hutchinson log-density is an
unbiased estimate of the exact-trace one computed on the same steps. Over ``R`` independent probe draws,
their mean must be within a few standard errors ``std / sqrt(R)`` of the exact value.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers_nets import SHAPE, _one_thread, tiny_unet  # noqa: F401 - fixture
from diffusers import DDPMScheduler

import diffusion_schemes as ds
from diffusion_schemes_diffusers import from_diffusers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers and numpy 2


@pytest.mark.slow  # 12 + 1 likelihood runs (about 10 s)
def test_hutchinson_log_likelihood_of_a_diffusers_model_agrees_with_the_exact_trace():
    scheduler = DDPMScheduler(prediction_type="epsilon")
    precond, schedule = from_diffusers(tiny_unet(scheduler), scheduler)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64).tanh()
    kwargs = {"sigma_min": 0.02, "sigma_max": 80.0, "num_steps": 3}
    with torch.no_grad():
        exact = ds.log_likelihood(precond, x, schedule, **kwargs)
    runs = 12
    estimates = torch.stack([
        ds.log_likelihood(precond, x, schedule, divergence="hutchinson", generator=torch.Generator().manual_seed(seed),
                          **kwargs).log_prob
        for seed in range(runs)
    ])
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(runs)
    print(f"exact {exact.log_prob.tolist()}, Hutchinson {mean.tolist()} +- {stderr.tolist()}")
    assert exact.nfe == 12 and exact.dim == math.prod(SHAPE[1:])
    assert bool((stderr > 0).all())  # the probes do move the estimate
    assert bool(((mean - exact.log_prob).abs() < 4 * stderr).all()), (mean, exact.log_prob, stderr)
    # and the exact value is not one any estimate would match: the spread of the divergence is visible
    assert bool(((estimates - exact.log_prob).abs().amax(0) > stderr).all())
