"""PhysicsNeMo 2.2.2 itself as the oracle: its sampler, its loss, its schedulers and preconditioners
against this library's on the same inputs. Skipped where PhysicsNeMo is not installed
(``make physicsnemo-test`` builds an environment with it); each test records the difference it
measured with the ``figure`` fixture."""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict

import diffusion_schemes as ds

pn_pre = pytest.importorskip("physicsnemo.diffusion.preconditioners")
from physicsnemo.diffusion.metrics.losses import MSEDSMLoss  # noqa: E402
from physicsnemo.diffusion.noise_schedulers import EDMNoiseScheduler, NoiseScheduler  # noqa: E402
from physicsnemo.diffusion.samplers import sample  # noqa: E402
from physicsnemo.models.diffusion_unets import DhariwalUNet, SongUNet  # noqa: E402

from diffusion_schemes_physicsnemo import ClassLabelsAdapter, as_physicsnemo, from_physicsnemo  # noqa: E402

F64 = torch.float64
SMALL_UNET = {"model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
DHARIWAL = {"model_channels": 64, "channel_mult": [1], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}  # 64 per head


def installed(kind: str) -> list[str]:
    return [info.name for info in ds.list_schemes(kind)]


class Net(torch.nn.Module):
    """A small float64 network ``F(x, c_noise, condition)`` whose output depends on the noise input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1, dtype=F64)

    def forward(self, x, t, condition=None):
        return torch.tanh(self.conv(x)) * torch.cos(t.to(x.dtype)).reshape(-1, 1, 1, 1)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------- the scheduler protocol
@pytest.mark.parametrize("name", installed("noise_schedule"))
def test_every_schedule_is_a_physicsnemo_noise_scheduler(name):
    assert isinstance(as_physicsnemo(name), NoiseScheduler)


def _flow_error(scheduler, n: int) -> float:
    """PhysicsNeMo's Heun (``n`` steps) with the exact denoiser of N(0, c^2), against the exact flow
    ``x_N sqrt(c^2 + s^2) / sqrt(c^2 + s_N^2)`` at the grid's last positive time (relative, float64)."""
    own, c = scheduler.schedule, 0.5
    steps = scheduler.timesteps(n, dtype=F64)
    xN = scheduler.init_latents((500,), steps[0].expand(4), dtype=F64, generator=torch.Generator().manual_seed(0))

    def exact(x, t):
        s = own.noise_level(t).reshape(-1, 1)
        return c**2 / (c**2 + s**2) * x

    (x,) = sample(scheduler.get_denoiser(x0_predictor=exact), xN, scheduler, n, solver="heun", time_eval=[n - 2])
    s_first, s_last = own.noise_level(steps[0]), own.noise_level(steps[-2])
    return relative(x, xN * ((c**2 + s_last**2) / (c**2 + s_first**2)).sqrt())


@pytest.mark.parametrize("name", installed("noise_schedule"))
def test_physicsnemo_sample_converges_to_the_exact_gaussian_flow(name, figure):
    """Heun is second order: four times the steps, about sixteen times smaller an error (at least 8 asked)."""
    scheduler = as_physicsnemo(name)
    coarse = figure(f"sample heun 256 steps vs exact Gaussian flow: {name}", _flow_error(scheduler, 256))
    fine = figure(f"sample heun 1024 steps vs exact Gaussian flow: {name}", _flow_error(scheduler, 1024))
    assert fine < coarse / 8 and fine < 1e-3


@pytest.mark.parametrize("name", installed("noise_schedule"))
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_physicsnemo_sample_equals_ds_sample_in_the_noise_level(name, solver, figure):
    """Where PhysicsNeMo's t is the noise level (EDM, VE, iDDPM: their own time; any schedule with
    time="noise_level"), its Euler and Heun are the integration ds.sample does."""
    times = ["noise_level"] + (["schedule"] if name in ("edm", "ve", "iddpm") else [])
    precond = ds.create("preconditioner", "edm", model=Net())
    for time in times:
        scheduler = as_physicsnemo(name, time=time)
        xN = scheduler.init_latents((2, 4, 4), scheduler.timesteps(8, dtype=F64)[0].expand(3), dtype=F64,
                                    generator=torch.Generator().manual_seed(1))
        theirs = sample(scheduler.get_denoiser(x0_predictor=precond), xN, scheduler, 8, solver=solver)
        ours = ds.sample(precond, xN, scheduler.schedule, num_steps=8, solver=solver).samples
        err = figure(f"sample {solver} 8 steps vs ds.sample (float64): {name}", relative(theirs, ours))
        assert err < 1e-10     # float64 rounding, in different orders, over 8 steps from noise levels up to 1e3


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_physicsnemo_stochastic_heun_churns_exactly_in_the_noise_level(name, figure):
    """EDM's churn (Karras et al. 2022, Algorithm 2) in PhysicsNeMo's solver keeps the exact N(0, c^2)
    marginal with the exact denoiser."""
    scheduler, c, n = as_physicsnemo(name, time="noise_level"), 0.5, 64
    own = scheduler.schedule
    torch.manual_seed(0)
    xN = scheduler.init_latents((4000,), scheduler.timesteps(n, dtype=F64)[0].expand(1), dtype=F64)

    def exact(x, t):      # a predictor gets the schedule's own time, whatever PhysicsNeMo's t is
        s = own.noise_level(t).reshape(-1, 1)
        return c**2 / (c**2 + s**2) * x

    x = sample(scheduler.get_denoiser(x0_predictor=exact), xN, scheduler, n, solver="edm_stochastic_heun",
               solver_options={"S_churn": 30.0, "num_steps": n, "S_max": 100.0})  # (1 + gamma) s <= sigma_max
    err = figure(f"stochastic heun (S_churn=30) |std / c - 1|, 4000 draws: {name}", abs(float(x.std()) / c - 1))
    assert err < 0.05    # the sample std's own spread is 1/sqrt(2 * 4000) = 1.1%


# ---------------------------------------------------------------------- the loss
@pytest.mark.parametrize("name", sorted(set(installed("noise_schedule")) & set(installed("preconditioner"))))
def test_physicsnemo_loss_equals_ds_loss(name, figure):
    scheduler = as_physicsnemo(name)
    precond = ds.create("preconditioner", name, model=Net())
    x0 = torch.randn(6, 2, 4, 4, dtype=F64)
    t = scheduler.sample_time(6, dtype=F64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    theirs = MSEDSMLoss(precond, scheduler)(x0, t=t)
    torch.manual_seed(5)
    noise = torch.randn(x0.shape, dtype=F64)
    ours = ds.MSEDSMLoss(precond, scheduler.schedule)(x0, t=t, noise=noise)
    err = figure(f"MSEDSMLoss vs ds.MSEDSMLoss (float64): {name}", relative(theirs, ours))
    assert err < 1e-12


def test_physicsnemo_loss_with_another_schemes_preconditioner(figure):
    scheduler = as_physicsnemo("vp")
    precond = ds.create("preconditioner", "edm", model=Net())
    x0, t = torch.randn(6, 2, 4, 4, dtype=F64), torch.linspace(0.05, 1.0, 6, dtype=F64)
    torch.manual_seed(5)
    theirs = MSEDSMLoss(scheduler.diffusion_model(precond), scheduler)(x0, t=t)
    torch.manual_seed(5)
    ours = ds.MSEDSMLoss(precond, scheduler.schedule)(x0, t=t, noise=torch.randn(x0.shape, dtype=F64))
    assert figure("MSEDSMLoss vs ds.MSEDSMLoss, edm preconditioner on vp", relative(theirs, ours)) < 1e-12


def test_ours_and_physicsnemos_edm_scheduler_agree(figure):
    """PhysicsNeMo's own EDMNoiseScheduler and ours on the same grid, weights, sampler and loss."""
    theirs, ours = EDMNoiseScheduler(), as_physicsnemo("edm")
    steps = theirs.timesteps(18, dtype=F64)
    figure("EDMNoiseScheduler vs edm: timesteps(18)", relative(ours.timesteps(18, dtype=F64), steps))
    torch.testing.assert_close(ours.timesteps(18, dtype=F64), steps, rtol=1e-12, atol=0)
    t = torch.logspace(-2, 1.5, 9, dtype=F64)
    figure("EDMNoiseScheduler vs edm: loss_weight", relative(ours.loss_weight(t), theirs.loss_weight(t)))
    torch.testing.assert_close(ours.loss_weight(t), theirs.loss_weight(t).to(F64), rtol=1e-12, atol=0)
    model = pn_pre.EDMPreconditioner(Net(), sigma_data=0.5)
    xN = theirs.init_latents((2, 4, 4), steps[0].expand(3), dtype=F64)
    a = sample(theirs.get_denoiser(x0_predictor=model), xN, theirs, 18)
    b = sample(ours.get_denoiser(x0_predictor=model), xN, ours, 18)
    assert figure("EDMNoiseScheduler vs edm: sample heun 18 steps", relative(b, a)) < 1e-12
    x0 = torch.randn(5, 2, 4, 4, dtype=F64)
    losses = []
    for scheduler in (theirs, ours):
        torch.manual_seed(9)
        losses.append(MSEDSMLoss(model, scheduler)(x0, t=t[:5]))
    assert figure("EDMNoiseScheduler vs edm: MSEDSMLoss", relative(losses[1], losses[0])) < 1e-12


# ---------------------------------------------------------------------- the preconditioners
NEW = {
    "edm": lambda net: pn_pre.EDMPreconditioner(net, sigma_data=0.7),
    "vp": lambda net: pn_pre.VPPreconditioner(net, beta_d=18.0, beta_min=0.2, M=500),
    "ve": lambda net: pn_pre.VEPreconditioner(net),
    "iddpm": lambda net: pn_pre.IDDPMPreconditioner(net, C_1=0.002, C_2=0.01, M=400),
}


@pytest.mark.parametrize("name", NEW)
def test_new_preconditioners_equal_ours_in_float64(name, figure):
    theirs = NEW[name](Net()).double()     # PhysicsNeMo keeps its parameters as float32 buffers
    ours = from_physicsnemo(theirs)
    assert ours.spec.name == name and ours.model is theirs.model
    x = torch.randn(3, 2, 4, 4, dtype=F64)
    lo, hi = ds.create("noise_schedule", name).domain()
    t = torch.linspace(lo, hi, 5, dtype=F64)[1:4]
    err = figure(f"{type(theirs).__name__} vs from_physicsnemo (float64 forward)", relative(ours(x, t), theirs(x, t)))
    assert err < 1e-12


def _legacy(name: str, label_dim: int):
    torch.manual_seed(0)
    if name == "edm":
        return pn_pre.EDMPrecond(8, 2, label_dim=label_dim, sigma_data=0.6, model_type="SongUNet", **SMALL_UNET)
    if name == "vp":
        return pn_pre.VPPrecond(8, 2, label_dim=label_dim, beta_d=18.0, beta_min=0.2, M=500, **SMALL_UNET)
    if name == "ve":
        return pn_pre.VEPrecond(8, 2, label_dim=label_dim, **SMALL_UNET)
    return pn_pre.iDDPMPrecond(8, 2, label_dim=label_dim, C_1=0.002, C_2=0.01, M=400, model_type="DhariwalUNet", **DHARIWAL)


@pytest.mark.parametrize("name", ["edm", "vp", "ve", "iddpm"])
@pytest.mark.parametrize("label_dim", [0, 3])
def test_legacy_preconditioners_equal_ours(name, label_dim, figure):
    theirs = _legacy(name, label_dim).eval()
    ours = from_physicsnemo(theirs)
    assert ours.spec.name == name and ours.model.net is theirs.model          # the same weights, not a copy
    assert all(a is b for a, b in zip(ours.parameters(), theirs.parameters()))
    sigma = torch.tensor([0.05, 0.8, 6.0])
    # the forward in float32, the legacy classes' own precision
    torch.manual_seed(1)
    x = torch.randn(3, 2, 8, 8)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 3).float() if label_dim else None
    condition = None if labels is None else TensorDict({"class_labels": labels}, batch_size=[3])
    with torch.no_grad():
        a, b = theirs(x, sigma, class_labels=labels), ours.forward_sigma(x, sigma, condition)
    err = figure(f"{type(theirs).__name__} vs from_physicsnemo: forward (float32)", relative(b, a))
    assert err < 1e-5
    # the coefficients in float64, with PhysicsNeMo's float32 parameter buffers made float64 (.double())
    s64 = sigma.to(F64).reshape(-1, 1, 1, 1)
    for mine, their in zip(ours.compute_coefficients(s64), theirs.double().compute_coefficients(s64)):
        their = their.to(mine.dtype)      # iDDPM's c_noise is an integer index there
        figure(f"{type(theirs).__name__} vs from_physicsnemo: coefficients (float64)", relative(mine, their))
        torch.testing.assert_close(mine, their, rtol=1e-12, atol=1e-12)


def test_legacy_edm_image_condition_is_concatenated_like_ours(figure):
    torch.manual_seed(0)
    theirs = pn_pre.EDMPrecond(8, 2, img_in_channels=3, img_out_channels=2, model_type="SongUNet", **SMALL_UNET).eval()
    ours = from_physicsnemo(theirs)
    x, image, sigma = torch.randn(2, 2, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([0.3, 2.0])
    with torch.no_grad():
        a = theirs(x, sigma, condition=image)
        b = ours.forward_sigma(x, sigma, TensorDict({"cond_concat": image}, batch_size=[2]))
    assert figure("EDMPrecond vs from_physicsnemo: image condition (float32)", relative(b, a)) < 1e-5


def test_songunet_as_a_backbone_with_class_labels_trains_and_samples_here():
    """What the trainer needs of a SongUNet: ClassLabelsAdapter around it, then any preconditioner."""
    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=2, out_channels=2, label_dim=3, **SMALL_UNET)
    precond = ds.create("preconditioner", "edm", model=ClassLabelsAdapter(net))
    schedule = ds.create("noise_schedule", "vp")
    condition = TensorDict({"class_labels": torch.eye(3)[[0, 1, 2, 0]]}, batch_size=[4])
    ds.MSEDSMLoss(precond, schedule)(torch.randn(4, 2, 8, 8), condition=condition).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    scheduler = as_physicsnemo(schedule)
    xN = scheduler.init_latents((2, 8, 8), scheduler.timesteps(4)[0].expand(4))
    with torch.no_grad():
        out = sample(scheduler.get_denoiser(x0_predictor=precond, condition=condition), xN, scheduler, 4)
    assert out.shape == (4, 2, 8, 8) and bool(torch.isfinite(out).all())


def test_dhariwal_unet_in_physicsnemos_sampler_through_a_partial():
    torch.manual_seed(0)
    net = DhariwalUNet(img_resolution=8, in_channels=2, out_channels=2, label_dim=3, **DHARIWAL)
    precond = ds.create("preconditioner", "iddpm", model=ClassLabelsAdapter(net))
    scheduler = as_physicsnemo("iddpm")
    labels = torch.eye(3)[[1, 2]]
    xN = scheduler.init_latents((2, 8, 8), scheduler.timesteps(3)[0].expand(2))
    with torch.no_grad():
        out = sample(scheduler.get_denoiser(x0_predictor=functools.partial(precond, condition=labels)), xN, scheduler, 3)
        again = sample(scheduler.get_denoiser(x0_predictor=precond, condition=labels), xN, scheduler, 3)
    torch.testing.assert_close(out, again, rtol=0, atol=0)

