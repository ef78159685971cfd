"""Learned uncertainty weighting (EDM2): the loss's formula, its optimum, and every schedule and weighting."""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError
from diffusion_schemes.weightings.uncertainty import UncertaintyWeight


def _zero_backbone(x, c_noise, condition=None):
    return torch.zeros_like(x)


def test_the_loss_is_w_over_exp_u_times_the_error_plus_u():
    schedule = ds.create("noise_schedule", "edm")
    precond = ds.create("preconditioner", "edm", model=_zero_backbone)
    plain = ds.MSEDSMLoss(precond, schedule, reduction="none")
    u = UncertaintyWeight(features=8)
    with torch.no_grad():
        u.linear.weight.normal_(generator=torch.Generator().manual_seed(1))
        u.linear.bias.fill_(0.3)
    learned = ds.MSEDSMLoss(precond, schedule, reduction="none", uncertainty=u)
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.01, 0.1, 1.0, 10.0, 60.0])
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    base = plain(x0, t=t, noise=noise).double()
    # u by hand, in float64, from the module's own parameters: sqrt(2) cos(2 pi (f ln(sigma)/4 + p)) . w + b
    c = torch.log(t.double())[:, None] / 4
    feats = math.sqrt(2) * torch.cos(2 * math.pi * (c * u.freqs.double() + u.phases.double()))
    by_hand = (feats @ u.linear.weight.double().T + u.linear.bias.double())  # (5, 1)
    expected = base * torch.exp(-by_hand) + by_hand
    assert learned.uncertainty is u
    torch.testing.assert_close(learned(x0, t=t, noise=noise).double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(by_hand[0], by_hand[-1])


def test_the_optimum_of_u_is_the_log_of_the_loss():
    """d/du (L exp(-u) + u) = 1 - L exp(-u), zero at u = ln L (autograd)."""
    loss = torch.tensor([0.02, 0.5, 3.0], dtype=torch.float64)
    u = torch.log(loss).clone().requires_grad_(True)
    (loss * torch.exp(-u) + u).sum().backward()
    torch.testing.assert_close(u.grad, torch.zeros(3, dtype=torch.float64))


def test_u_learns_the_log_of_the_expected_loss_per_noise_level():
    """With D = c_skip x_hat (a zero backbone) and x0 ~ N(0, sd^2), the unweighted x0-error at noise level s is
    E[(c_skip (x0 + s n) - x0)^2] = (c_skip - 1)^2 sd^2 + c_skip^2 s^2 = sd^2 s^2 / (s^2 + sd^2); u must learn its log."""
    sd = 0.5
    schedule = ds.create("noise_schedule", "edm")
    precond = ds.create("preconditioner", "edm", model=_zero_backbone)
    loss_fn = ds.MSEDSMLoss(precond, schedule, weighting=1.0, uncertainty=True)
    opt = torch.optim.Adam(loss_fn.uncertainty.parameters(), lr=2e-2)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)  # the decay averages out the minibatch noise
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        x0 = sd * torch.randn(512, 4, generator=g)
        loss = loss_fn(x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    sigma = torch.tensor([0.1, 0.3, 1.0, 3.0], dtype=torch.float64)  # where log-normal training times are dense
    expected = torch.log(sd**2 * sigma**2 / (sigma**2 + sd**2))
    with torch.no_grad():
        learned = loss_fn.uncertainty(sigma)
    torch.testing.assert_close(learned, expected, atol=0.1, rtol=0)  # measured: within 0.06
    assert float(learned.max() - learned.min()) > 2.0  # a curve, not a constant


@pytest.mark.parametrize("scheme", ["edm", "vp", "ve", "iddpm", "flow_matching"])
@pytest.mark.parametrize("weighting", [None, 1.0, "sigmoid", "snr"])
def test_every_schedule_and_weighting_trains_u(scheme, weighting):
    schedule = ds.create("noise_schedule", scheme)
    layer = torch.nn.Linear(3, 3)
    precond = ds.create("preconditioner", scheme, model=lambda x, c_noise, condition=None: layer(x) * c_noise.float()[:, None])
    loss_fn = ds.MSEDSMLoss(precond, schedule, weighting=weighting, uncertainty=True)
    loss = loss_fn(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), generator=torch.Generator().manual_seed(1))
    loss.backward()
    grads = [p.grad for p in loss_fn.uncertainty.parameters()]
    assert torch.isfinite(loss) and all(torch.isfinite(gr).all() for gr in grads)
    assert any(float(gr.abs().max()) > 0 for gr in grads)


def test_bad_uncertainty_arguments_say_what_is_expected():
    schedule = ds.create("noise_schedule", "edm")
    precond = ds.create("preconditioner", "edm", model=_zero_backbone)
    with pytest.raises(ArgumentTypeError, match="True, False or a module"):
        ds.MSEDSMLoss(precond, schedule, uncertainty="yes")
    assert issubclass(ArgumentTypeError, (ds.DiffusionSchemesError, TypeError))
    with pytest.raises(ds.DomainError, match="sigma > 0"):
        UncertaintyWeight()(torch.tensor([0.0, 1.0]))
    assert ds.MSEDSMLoss(precond, schedule).uncertainty is None
