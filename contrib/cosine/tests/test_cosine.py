"""The cosine distribution's own tests: the conformance kit, and lambda against an independent closed form."""

import math

import pytest
import torch

import diffusion_schemes as ds


@pytest.mark.diffusion_schemes_conformance("noise_schedule", "cosine")
def test_cosine_conforms():
    pass


@pytest.mark.parametrize("config", [{"shift": 1.5}, {"shift": -2.0, "log_snr_min": -8.0, "log_snr_max": 6.0}])
def test_shifted_and_clipped_conform(conformance, config):
    conformance.check("noise_schedule", {"name": "cosine", **config})


def test_lambda_is_the_cosine_schedule():
    """alpha^2 = cos^2(pi t/2), sigma^2 = sin^2(pi t/2) (Nichol & Dhariwal 2021) shifted by 2 shift in lambda."""
    s = ds.create("noise_schedule", {"name": "cosine", "shift": 0.7})
    t = torch.linspace(*s.domain(), 17, dtype=torch.float64)
    alpha2, sigma2 = torch.cos(math.pi * t / 2) ** 2, torch.sin(math.pi * t / 2) ** 2
    torch.testing.assert_close(s.get_log_snr(t), (alpha2 / sigma2).log() + 1.4, rtol=1e-10, atol=1e-10)


def test_clipping_restricts_the_domain():
    s = ds.create("noise_schedule", {"name": "cosine", "shift": 0.5, "log_snr_min": -10.0, "log_snr_max": 12.0})
    lam = s.get_log_snr(torch.tensor(s.domain(), dtype=torch.float64))
    torch.testing.assert_close(lam, torch.tensor([12.0, -10.0], dtype=torch.float64), rtol=0, atol=1e-9)
    with pytest.raises(ds.SchemeConfigError, match="log_snr_min"):
        ds.create("noise_schedule", {"name": "cosine", "log_snr_min": 3.0, "log_snr_max": 1.0})


def test_listed_from_its_own_distribution():
    info = [i for i in ds.list_schemes("noise_schedule") if i.name == "cosine"]
    assert [i.distribution for i in info] == ["diffusion-schemes-cosine"]
