"""BayesFlow's ``DiffusionModel.log_prob`` on a schedule of ours and ``ds.log_likelihood`` on the same trained network.

Both integrate the same probability-flow ODE, in different coordinates: BayesFlow the scaled latent ``z = alpha x``
in its time ``t`` in ``[0, 1]`` from the data (``t = 0``) to its base ``N(0, I)`` (``t = 1``), with the exact
Jacobian trace; ``ds.log_likelihood`` the unscaled ``x = z / alpha`` in ``ln sigma`` with the prior ``N(0,
sigma_max^2 I)``. Between the two, the change of variables ``p_z(z) = p_x(z / alpha) / alpha^D`` at both ends:

    log p_BF(z0) = log p_ours(z0 / alpha_0) - D ln alpha_0
                   - log N(x1; 0, sigma_max^2 I) + log N(alpha_1 x1; 0, I) + D ln alpha_1,

where ``x1`` are our latents at ``sigma_max`` (the last two terms put BayesFlow's base in place of our prior).
What is left is the two integrators' error.
"""

from __future__ import annotations

import math
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import bayesflow as bf  # noqa: E402  (installed by make setup: no skip)
import keras  # noqa: E402

import diffusion_schemes as ds  # noqa: E402
from diffusion_schemes_bayesflow import as_bayesflow  # noqa: E402

S = 0.5  # theta ~ N(0, I), x | theta ~ N(theta, S^2 I): the conditional problem of the end-to-end test


def trained_network():
    """A DiffusionModel on the VP schedule, trained two epochs (seconds): a real network, not an exact one."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(1024, 2)).astype("float32")
    x = (theta + S * rng.normal(size=(1024, 2))).astype("float32")
    schedule = as_bayesflow("vp")
    network = bf.networks.DiffusionModel(noise_schedule=schedule, subnet_kwargs={"widths": (64, 64)})
    workflow = bf.BasicWorkflow(inference_network=network, inference_variables="theta", inference_conditions="x",
                                initial_learning_rate=1e-3)
    with torch.enable_grad():
        workflow.fit_offline({"theta": theta, "x": x}, epochs=2, batch_size=128, verbose=0)
    return workflow.approximator.inference_network, schedule, torch.as_tensor(theta[:6]), torch.as_tensor(x[:6])


def as_x0_predictor(network, schedule):
    """BayesFlow's network as an x0-predictor in the schedule's time: its score of ``z = alpha x`` gives
    ``E[x0 | z] = (z + sigma^2 score) / alpha`` (Tweedie)."""

    def x0_predictor(x, t, condition=None):
        lam = schedule.get_log_snr(t)
        alpha, sigma = (v[:, None].to(x.dtype) for v in schedule.get_alpha_sigma(lam))
        z = alpha * x
        score = network.score(z, log_snr_t=lam[:, None].to(x.dtype), conditions=condition, training=False)
        return (z + sigma**2 * score) / alpha

    return x0_predictor


@pytest.mark.slow
def test_bayesflow_log_prob_is_our_log_likelihood_on_the_same_network():
    network, bf_schedule, theta, x = trained_network()
    schedule = bf_schedule.schedule
    sigma_max, sigma_min = (float(s) for s in schedule.sigmas(2)[:2])
    alpha_0, alpha_1 = (float(schedule.get_alpha_sigma(torch.tensor(-2 * math.log(s), dtype=torch.float64))[0])
                        for s in (sigma_min, sigma_max))
    # BayesFlow's t = 0 and t = 1 are our default sigma_min and sigma_max (its sampling map is the schedule's grid)
    ends = bf_schedule.get_log_snr(torch.tensor([0.0, 1.0], dtype=torch.float64), training=False)
    torch.testing.assert_close(ends, torch.tensor([-2 * math.log(sigma_min), -2 * math.log(sigma_max)],
                                                  dtype=torch.float64), rtol=1e-12, atol=0)

    ours = ds.log_likelihood(as_x0_predictor(network, schedule), theta / alpha_0, schedule, condition=x,
                             num_steps=100)
    latents = ours.latents.double()
    as_bayesflow_sees_it = (
        ours.log_prob.double() - 2 * math.log(alpha_0)
        - torch.distributions.Normal(0.0, sigma_max).log_prob(latents).sum(1)
        + torch.distributions.Normal(0.0, 1.0).log_prob(alpha_1 * latents).sum(1) + 2 * math.log(alpha_1)
    )
    # BayesFlow's fixed-step Dormand-Prince on 50 steps even in ln sigma (its default grid, even in t, would need
    # several hundred steps for the same accuracy: the ODE is stiff near t = 0 in that time)
    sigmas = torch.logspace(math.log10(sigma_min), math.log10(sigma_max), 51, dtype=torch.float64)
    times = bf_schedule.get_t_from_log_snr(-2 * sigmas.log(), training=False).float().numpy()
    times[0], times[-1] = 0.0, 1.0
    network.integrate_kwargs = {"method": "rk45", "steps": times}
    with torch.enable_grad():
        theirs = network.log_prob(theta, conditions=x).detach().double()
    assert (theirs - as_bayesflow_sees_it).abs().max() < 1e-4, (theirs, as_bayesflow_sees_it)
