"""BayesFlow's DiffusionModel trains with a schedule of ours by name and recovers a known posterior."""

from __future__ import annotations

import os
import time

os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported

import numpy as np
import pytest

import bayesflow as bf  # noqa: E402  (installed by make setup: no skip)
import keras  # noqa: E402
import torch  # noqa: E402

from diffusion_schemes_bayesflow import as_bayesflow  # noqa: E402

#: Observation noise of the conjugate problem theta ~ N(0, I), x | theta ~ N(theta, S^2 I) (2 dimensions):
#: the posterior is N(x / (1 + S^2), S^2 / (1 + S^2) I), so mean 0.8 x and std 0.4472 for S = 0.5.
S = 0.5
#: Tolerances: 1000 posterior draws estimate the mean to 0.014 and the std to 2% (one standard error); the rest is
#: what 16 short epochs leave of the network's error.
MEAN_TOL, STD_REL_TOL = 0.1, 0.15


def train_and_sample(schedule_name: str) -> tuple[np.ndarray, np.ndarray, float]:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(4096, 2))
    data = {"theta": theta.astype("float32"), "x": (theta + S * rng.normal(size=(4096, 2))).astype("float32")}
    network = bf.networks.DiffusionModel(noise_schedule=as_bayesflow(schedule_name), subnet_kwargs={"widths": (64, 64)})
    workflow = bf.BasicWorkflow(
        inference_network=network, inference_variables="theta", inference_conditions="x", initial_learning_rate=1e-3
    )
    start = time.perf_counter()
    workflow.fit_offline(data, epochs=16, batch_size=128, verbose=0)
    x_obs = np.array([[1.0, -0.5]], dtype="float32")
    with torch.no_grad():
        draws = workflow.sample(conditions={"x": x_obs}, num_samples=1000, method="rk45", steps=30)["theta"][0]
    return draws, x_obs[0], time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", ["vp", "cosine"])
def test_diffusion_model_recovers_the_conjugate_gaussian_posterior(schedule_name):
    draws, x_obs, seconds = train_and_sample(schedule_name)
    mean, std = x_obs / (1 + S**2), np.sqrt(S**2 / (1 + S**2))
    assert np.abs(draws.mean(axis=0) - mean).max() < MEAN_TOL, (draws.mean(axis=0), mean)
    assert np.abs(draws.std(axis=0) / std - 1).max() < STD_REL_TOL, (draws.std(axis=0), std)
    print(f"{schedule_name}: {seconds:.1f} s, mean {draws.mean(axis=0)} (exact {mean}), std {draws.std(axis=0)} (exact {std:.4f})")
