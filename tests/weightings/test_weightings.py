"""Loss weightings against their closed forms, conversion between loss types, and weightings named in configs."""

from __future__ import annotations

import pytest
import torch
from scheme_reference import EDM, F64, REFS, SCHEMES, time_grid

import diffusion_schemes as ds
from diffusion_schemes.weightings import convert_weight

LAM = torch.linspace(-20, 20, 81, dtype=F64)


def test_sigmoid_by_name_with_bias():
    w = ds.create("weighting", {"name": "sigmoid", "bias": 1})
    assert w.loss_type == "epsilon" and w.bias == 1.0
    torch.testing.assert_close(w(LAM), 1 / (1 + torch.exp(LAM - 1)), rtol=1e-12, atol=1e-300)
    default = ds.create("weighting", "sigmoid")
    torch.testing.assert_close(default(LAM), 1 / (1 + torch.exp(LAM - 2.0)), rtol=1e-12, atol=1e-300)


def test_snr_weighting_is_one_over_sigma_squared_on_x0():
    w = ds.create("weighting", "snr")
    sigma = torch.exp(-LAM / 2)
    assert w.loss_type == "x0"
    torch.testing.assert_close(w(LAM), 1 / sigma**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(w.convert(LAM, "epsilon"), torch.ones_like(LAM), rtol=1e-12, atol=0)


def test_edm_weighting():
    sd = EDM["sigma_data"]
    w = ds.create("weighting", {"name": "edm", "sigma_data": sd})
    sigma = torch.exp(-LAM / 2)
    assert w.loss_type == "x0"
    torch.testing.assert_close(w(LAM), (sigma**2 + sd**2) / (sigma * sd) ** 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", SCHEMES)
def test_likelihood_weighting_is_minus_dlambda_dt(name):
    """Song et al. 2021: g^2 / sigma^2 = -lambda'(t) on the epsilon-loss, lambda' by autograd of the closed form."""
    s, ref = ds.create("noise_schedule", name), REFS[name]
    w = ds.create("weighting", "likelihood_weighting")
    t = time_grid(name, 65, training=True).requires_grad_(True)
    (dlam,) = torch.autograd.grad(ref.log_snr(t).sum(), t)
    log_snr = s.get_log_snr(t.detach())
    assert w.loss_type == "epsilon"
    torch.testing.assert_close(w(log_snr, schedule=s), -dlam, rtol=1e-9, atol=0)
    _, sigma_f = s.get_alpha_sigma(log_snr)
    torch.testing.assert_close(w(log_snr, schedule=s), s.get_drift_diffusion(log_snr) / sigma_f**2, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="needs the noise schedule"):
        w(log_snr)


def test_convert_weight_closed_forms_and_round_trip():
    w_eps = torch.rand(LAM.shape, generator=torch.Generator().manual_seed(0), dtype=F64) + 0.1
    to_x0 = convert_weight(w_eps, LAM, "epsilon", "x0")
    to_v = convert_weight(to_x0, LAM, "x0", "v")
    back = convert_weight(to_v, LAM, "v", "epsilon")
    torch.testing.assert_close(to_x0, w_eps * torch.exp(LAM), rtol=1e-12, atol=0)
    torch.testing.assert_close(to_v, w_eps / (1 + torch.exp(-LAM)), rtol=1e-12, atol=0)
    torch.testing.assert_close(back, w_eps, rtol=1e-12, atol=0)
    score = convert_weight(w_eps, LAM, "epsilon", "score")
    torch.testing.assert_close(score, w_eps * torch.exp(-LAM), rtol=1e-12, atol=0)
    torch.testing.assert_close(convert_weight(score, LAM, "score", "epsilon"), w_eps, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="unknown loss type 'eps'"):
        convert_weight(w_eps, LAM, "epsilon", "eps")


def test_conversion_keeps_the_objective():
    """w_type * ||target - estimate||^2 is the same number for every prediction type (VP alpha, sigma of lambda)."""
    g = torch.Generator().manual_seed(1)
    lam = torch.linspace(-8, 8, 17, dtype=F64)
    alpha, sigma = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
    x0, eps, err = (torch.randn(17, generator=g, dtype=F64) for _ in range(3))
    eps_hat = eps + err
    x0_hat = x0 - sigma / alpha * err  # z = alpha x0 + sigma eps fixed
    v, v_hat = alpha * eps - sigma * x0, alpha * eps_hat - sigma * x0_hat
    w = ds.create("weighting", {"name": "sigmoid", "bias": 0.5})
    losses = {
        "epsilon": w.convert(lam, "epsilon") * (eps - eps_hat) ** 2,
        "x0": w.convert(lam, "x0") * (x0 - x0_hat) ** 2,
        "v": w.convert(lam, "v") * (v - v_hat) ** 2,
    }
    for key in ("x0", "v"):
        torch.testing.assert_close(losses[key], losses["epsilon"], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", SCHEMES)
def test_schedule_config_names_its_weighting(name):
    t = time_grid(name, 33, training=True)
    lam = REFS[name].log_snr(t)
    s = ds.create("noise_schedule", {"name": name, "weighting": "sigmoid"})
    assert type(s.weighting).__name__ == "SigmoidWeighting"
    torch.testing.assert_close(s.weighting(lam, schedule=s), torch.sigmoid(2 - lam), rtol=1e-12, atol=0)
    torch.testing.assert_close(s.loss_weight(t, "epsilon"), torch.sigmoid(2 - lam), rtol=1e-12, atol=0)
    torch.testing.assert_close(s.loss_weight(t, "x0"), torch.sigmoid(2 - lam) * torch.exp(lam), rtol=1e-12, atol=0)
    s1 = ds.create("noise_schedule", {"name": name, "weighting": {"name": "sigmoid", "bias": 1}})
    torch.testing.assert_close(s1.loss_weight(t, "epsilon"), torch.sigmoid(1 - lam), rtol=1e-12, atol=0)
    uniform = ds.create("noise_schedule", {"name": name, "weighting": None})
    assert uniform.weighting is None and bool((uniform.loss_weight(t, "x0") == 1).all())


@pytest.mark.parametrize("name", SCHEMES)
def test_default_weighting_is_table_1(name):
    s = ds.create("noise_schedule", name)
    t = time_grid(name, 33, training=True)
    sigma = REFS[name].sigma(t)
    if name == "edm":
        sd = EDM["sigma_data"]
        want = (sigma**2 + sd**2) / (sigma * sd) ** 2
    else:
        want = 1 / sigma**2
    torch.testing.assert_close(s.loss_weight(t, "x0"), want, rtol=1e-10, atol=0)


def test_vp_schedule_with_sigmoid_by_name():
    s = ds.create("noise_schedule", {"name": "vp", "weighting": "sigmoid"})
    assert s.get_config()["weighting"] == "sigmoid"
    assert s.spec.weighting == "sigmoid"


def test_weighting_object_in_a_schedule_serialises_by_its_spec():
    w = ds.create("weighting", {"name": "sigmoid", "bias": 3})
    s = ds.create("noise_schedule", "ve").__class__(weighting=w)
    assert s.get_config()["weighting"] == {"name": "sigmoid", "bias": 3.0}
    assert type(s).from_config(s.get_config()) == s


def test_convert_weight_writes_out_the_loss_types_it_knows_as_LOSS_TYPES():
    """``convert_weight`` names the loss types as a constant of its code (no guard on a module global under
    torch.compile); that constant must stay the module's ``LOSS_TYPES``."""
    from diffusion_schemes.weightings.base import LOSS_TYPES, convert_weight

    written = [c for c in convert_weight.__code__.co_consts if isinstance(c, (tuple, frozenset)) and "x0" in c]
    assert written and all(set(c) == set(LOSS_TYPES) for c in written)
