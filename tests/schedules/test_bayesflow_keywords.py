"""BayesFlow-style keyword calls (``log_snr_t=``) on the core's schedules, and the ``training`` flag's meaning."""

from __future__ import annotations

import pytest
import torch

import diffusion_schemes as ds

SCHEDULES = [info.name for info in ds.list_schemes("noise_schedule")]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(
    "method, extra",
    [("get_t_from_log_snr", {"training": False}), ("derivative_log_snr", {}), ("get_alpha_sigma", {}), ("get_drift_diffusion", {})],
)
def test_log_snr_t_is_a_deprecated_alias(name, method, extra):
    schedule = ds.create("noise_schedule", name)
    lam = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    expected = getattr(schedule, method)(lam, **extra)
    with pytest.warns(DeprecationWarning, match=rf"{method}\(log_snr_t=...\) is BayesFlow's argument name"):
        got = getattr(schedule, method)(log_snr_t=lam, **extra)
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)):
        assert torch.equal(a, b)


def test_log_snr_given_twice_is_a_clear_error():
    vp = ds.create("noise_schedule", "vp")
    with pytest.raises(TypeError, match="got the log-SNR twice"):
        vp.get_alpha_sigma(torch.tensor(0.0), log_snr_t=torch.tensor(0.0))


@pytest.mark.parametrize("name", SCHEDULES)
def test_training_flag_keeps_native_time(name):
    """The built-in schemes: one lambda(t) in native time for both flags (not BayesFlow's t in [0, 1])."""
    schedule = ds.create("noise_schedule", name)
    lo, hi = schedule.domain()
    t = torch.linspace(lo, hi, 9, dtype=torch.float64)
    lam = schedule.get_log_snr(t, training=False)
    assert torch.equal(schedule.get_log_snr(t, training=True), lam)
    assert torch.equal(schedule.get_t_from_log_snr(lam, training=True), schedule.get_t_from_log_snr(lam, training=False))
    torch.testing.assert_close(schedule.get_t_from_log_snr(lam, training=True), t, rtol=1e-9, atol=0)
