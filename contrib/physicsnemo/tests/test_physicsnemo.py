"""The parts that need no PhysicsNeMo: the scheduler protocol's maths against the schedule, the
class-labels adapter, the argument checks, and that nothing here imports PhysicsNeMo."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from tensordict import TensorDict

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError, ConditionError, InvalidArgumentError

from diffusion_schemes_physicsnemo import ClassLabelsAdapter, PhysicsNeMoScheduler, as_physicsnemo, from_physicsnemo

F64 = torch.float64


def installed_schedules() -> list[str]:
    return [info.name for info in ds.list_schemes("noise_schedule")]


def inner_times(schedule, n: int = 9) -> torch.Tensor:
    """``n`` sampling times strictly inside the schedule's domain (float64)."""
    lo, hi = schedule.domain()
    return torch.linspace(lo, hi, n + 2, dtype=F64)[1:-1]


def level_and_rate(schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s(t) = exp(-lambda(t) / 2)`` and ``ds/dt`` by autograd, from the schedule's lambda alone."""
    tt = t.clone().requires_grad_(True)
    s = torch.exp(-schedule.get_log_snr(tt) / 2)
    (rate,) = torch.autograd.grad(s.sum(), tt)
    return s.detach(), rate


def gaussian_x0(c: float):
    """The exact x0-predictor of data N(0, c^2 I) on the unscaled latent ``x0 + s eps``: ``c^2 / (c^2 + s^2) x``."""

    def predictor(x, t, schedule):
        s = append(schedule.noise_level(t), x)
        return c**2 / (c**2 + s**2) * x

    return predictor


def append(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


# ---------------------------------------------------------------------- the protocol's maths, every installed schedule
@pytest.mark.parametrize("name", installed_schedules())
def test_noise_level_maps_follow_lambda(name):
    scheduler = as_physicsnemo(name)
    own = scheduler.schedule
    t = inner_times(own)
    s, rate = level_and_rate(own, t)
    torch.testing.assert_close(scheduler.sigma(t), s, rtol=1e-12, atol=0)
    torch.testing.assert_close(scheduler.sigma_dot(t), rate, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(scheduler.sigma_inv(s), t, rtol=1e-9, atol=1e-12)
    x = torch.randn(t.shape[0], 3, dtype=F64)
    torch.testing.assert_close(scheduler.diffusion(x, t), (2 * s * rate)[:, None], rtol=1e-9, atol=1e-12)
    assert torch.equal(scheduler.drift(x, t), torch.zeros_like(x))
    assert torch.equal(scheduler.alpha(t), torch.ones_like(t)) and torch.equal(scheduler.alpha_dot(t), torch.zeros_like(t))


@pytest.mark.parametrize("name", installed_schedules())
def test_training_side_is_the_unscaled_forward_process(name):
    scheduler = as_physicsnemo(name)
    own = scheduler.schedule
    t = scheduler.sample_time(6, dtype=F64, generator=torch.Generator().manual_seed(0))
    lo, hi = own.domain(training=True)
    assert t.dtype == F64 and t.shape == (6,) and bool(((t >= lo) & (t <= hi)).all())
    x0, noise = torch.randn(6, 2, 3, dtype=F64), torch.randn(6, 2, 3, dtype=F64)
    s = torch.exp(-own.get_log_snr(t, training=True) / 2)
    torch.testing.assert_close(scheduler.add_noise(x0, t, noise=noise), x0 + s[:, None, None] * noise, rtol=1e-14, atol=0)
    # drawn noise: the same draw from the same generator
    drawn = scheduler.add_noise(x0, t, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(drawn, x0 + s[:, None, None] * eps, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", installed_schedules())
def test_sampling_side_grid_latents_and_denoiser(name):
    scheduler = as_physicsnemo(name)
    own = scheduler.schedule
    steps = scheduler.timesteps(7, dtype=F64)
    torch.testing.assert_close(steps, own.timesteps(7), rtol=0, atol=0)
    assert steps.shape == (8,) and steps[-1] == 0 and bool((steps[1:] < steps[:-1]).all())
    assert scheduler.timesteps(7).dtype == torch.get_default_dtype()
    tN = steps[0].expand(4)
    latents = scheduler.init_latents((2, 3), tN, dtype=F64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(latents, level_and_rate(own, tN)[0][:, None, None] * eps, rtol=1e-12, atol=0)
    # with the exact denoiser of N(0, c^2): x(t) = x(T) sqrt(c^2 + s(t)^2) / sqrt(c^2 + s(T)^2), so
    # dx/dt = x d/dt log sqrt(c^2 + s^2) (ODE) and twice that for the reverse-SDE drift
    c = 0.7
    t = inner_times(own, 4)
    x = torch.randn(4, 2, 3, dtype=F64)
    tt = t.clone().requires_grad_(True)
    s = torch.exp(-own.get_log_snr(tt) / 2)
    (dlog,) = torch.autograd.grad((0.5 * torch.log(c**2 + s**2)).sum(), tt)
    predictor = gaussian_x0(c)
    ode = scheduler.get_denoiser(x0_predictor=lambda x, t: predictor(x, t, own))
    sde = scheduler.get_denoiser(x0_predictor=lambda x, t: predictor(x, t, own), denoising_type="sde")
    torch.testing.assert_close(ode(x, t), dlog[:, None, None] * x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sde(x, t), 2 * dlog[:, None, None] * x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["edm", "ve", "iddpm"])
def test_heun_in_physicsnemo_style_reaches_the_exact_gaussian_flow(name):
    """PhysicsNeMo's Heun step ``x + h (d(x, t) + d(x', t')) / 2`` over this grid; at the last
    positive time the latent must be the exact flow, and the final Euler step to 0 returns D."""
    scheduler = as_physicsnemo(name)
    own, c = scheduler.schedule, 0.5
    steps = scheduler.timesteps(128, dtype=F64)
    x = scheduler.init_latents((1000,), steps[0].expand(2), dtype=F64, generator=torch.Generator().manual_seed(0))
    start = x.clone()
    predictor = gaussian_x0(c)
    denoiser = scheduler.get_denoiser(x0_predictor=lambda x, t: predictor(x, t, own))
    for t_cur, t_next in zip(steps[:-2], steps[1:-1]):
        tc, tn = t_cur.expand(2), t_next.expand(2)
        d = denoiser(x, tc)
        x_prime = x + (t_next - t_cur) * d
        x = x + (t_next - t_cur) * (d + denoiser(x_prime, tn)) / 2
    s_first, s_last = own.noise_level(steps[0]), own.noise_level(steps[-2])
    exact = start * math.sqrt((c**2 + s_last**2) / (c**2 + s_first**2))
    assert float((x - exact).abs().max() / exact.abs().max()) < 1e-3
    last = x + (0 - steps[-2]) * denoiser(x, steps[-2].expand(2))    # t = s: x - s (x - D) / s = D
    torch.testing.assert_close(last, predictor(x, steps[-2].expand(2), own), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", installed_schedules())
def test_noise_level_time_is_edms_convention_for_every_schedule(name):
    scheduler = as_physicsnemo(name, time="noise_level")
    own = scheduler.schedule
    torch.testing.assert_close(scheduler.timesteps(7, dtype=F64), own.sigmas(7), rtol=0, atol=0)
    sigma = own.noise_level(inner_times(own, 4))
    assert torch.equal(scheduler.sigma(sigma), sigma) and torch.equal(scheduler.sigma_inv(sigma), sigma)
    torch.testing.assert_close(scheduler.schedule_time(sigma), inner_times(own, 4), rtol=1e-9, atol=1e-12)
    x0, noise = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(scheduler.add_noise(x0, sigma, noise=noise), x0 + sigma[:, None] * noise, rtol=1e-14, atol=0)
    torch.testing.assert_close(scheduler.loss_weight(sigma), own.loss_weight(scheduler.schedule_time(sigma)), rtol=1e-9, atol=0)
    # exact denoiser of N(0, c^2): dx/ds = (x - D) / s = s / (c^2 + s^2) x; the SDE drift is twice that
    c, x = 0.7, torch.randn(4, 3, dtype=F64)
    predictor = gaussian_x0(c)
    ode = scheduler.get_denoiser(x0_predictor=lambda x, t: predictor(x, t, own))
    sde = scheduler.get_denoiser(x0_predictor=lambda x, t: predictor(x, t, own), denoising_type="sde")
    torch.testing.assert_close(ode(x, sigma), (sigma / (c**2 + sigma**2))[:, None] * x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sde(x, sigma), 2 * (sigma / (c**2 + sigma**2))[:, None] * x, rtol=1e-9, atol=1e-12)
    training = scheduler.sample_time(5, dtype=F64, generator=torch.Generator().manual_seed(0))
    times = own.sample_time(5, generator=torch.Generator().manual_seed(0)).to(F64)
    torch.testing.assert_close(training, torch.exp(-own.get_log_snr(times, training=True) / 2), rtol=1e-12, atol=0)


def test_loss_weight_is_the_schedules_x0_weight():
    t = torch.tensor([0.05, 0.5, 3.0], dtype=F64)
    sd = 0.5  # EDM (Karras et al. 2022, eq. 8): lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
    torch.testing.assert_close(as_physicsnemo("edm").loss_weight(t), (t**2 + sd**2) / (t * sd) ** 2, rtol=1e-12, atol=0)
    torch.testing.assert_close(as_physicsnemo("ve").loss_weight(t), 1 / t**2, rtol=1e-12, atol=0)
    tv = torch.tensor([0.01, 0.3, 1.0], dtype=F64)  # VP: 1 / sigma(t)^2 with sigma^2 = exp(beta_d t^2/2 + beta_min t) - 1
    torch.testing.assert_close(
        as_physicsnemo("vp").loss_weight(tv), 1 / torch.expm1(19.9 / 2 * tv**2 + 0.1 * tv), rtol=1e-12, atol=0
    )


def test_conversions_between_predictions_round_trip():
    scheduler = as_physicsnemo("vp")
    t = torch.tensor([0.2, 0.9], dtype=F64)
    x_t, x0 = torch.randn(2, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    s = torch.expm1(19.9 / 2 * t**2 + 0.1 * t).sqrt()[:, None]
    torch.testing.assert_close(scheduler.x0_to_score(x0, x_t, t), (x0 - x_t) / s**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(scheduler.score_to_x0(scheduler.x0_to_score(x0, x_t, t), x_t, t), x0, rtol=1e-12, atol=1e-12)
    eps = (x_t - x0) / s
    torch.testing.assert_close(scheduler.epsilon_to_x0(eps, x_t, t), x0, rtol=1e-12, atol=1e-12)


def test_discretization_places_the_steps_in_the_schedules_time():
    scheduler = as_physicsnemo("vp", discretization="karras")
    steps = scheduler.timesteps(5, dtype=F64)
    sigmas = ds.create("discretization", "karras").sigmas(5, scheduler.schedule)
    torch.testing.assert_close(scheduler.sigma(steps[:-1]), sigmas[:-1].to(F64), rtol=1e-10, atol=0)
    assert steps[-1] == 0


def test_diffusion_model_calls_a_preconditioner_at_the_noise_level():
    vp = as_physicsnemo("vp")
    edm = ds.create("preconditioner", "edm", model=lambda x, c_noise, condition=None: x * c_noise[:, None])
    x, t = torch.randn(2, 3, dtype=F64), torch.tensor([0.3, 0.8], dtype=F64)
    s = torch.expm1(19.9 / 2 * t**2 + 0.1 * t).sqrt()
    torch.testing.assert_close(vp.diffusion_model(edm)(x, t), edm(x, s), rtol=1e-14, atol=0)
    plain = vp.diffusion_model(lambda x, t, condition=None: x * t[:, None])    # anything else gets the time
    torch.testing.assert_close(plain(x, t), x * t[:, None], rtol=0, atol=0)
    by_level = as_physicsnemo("vp", time="noise_level").diffusion_model(lambda x, t, condition=None: x * t[:, None])
    torch.testing.assert_close(by_level(x, s), x * t[:, None], rtol=1e-9, atol=0)      # the schedule's own time


def test_loss_through_the_protocol_equals_ds_loss():
    """What PhysicsNeMo's MSEDSMLoss computes from these calls (its docs): mean of w(t) (model(add_noise(x0, t), t) - x0)^2."""
    for name, precond_name in (("vp", "vp"), ("edm", "edm"), ("vp", "edm")):
        scheduler = as_physicsnemo(name)
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 3).double()
        precond = ds.create("preconditioner", precond_name, model=lambda x, c, condition=None: net(x))
        model = scheduler.diffusion_model(precond)
        x0, t = torch.randn(8, 3, dtype=F64), scheduler.sample_time(8, dtype=F64)
        noise = torch.randn(8, 3, dtype=F64)
        x_t = scheduler.add_noise(x0, t, noise=noise)
        theirs = (scheduler.loss_weight(t)[:, None] * (model(x_t, t) - x0) ** 2).mean()
        ours = ds.MSEDSMLoss(precond, scheduler.schedule)(x0, t=t, noise=noise)
        torch.testing.assert_close(theirs, ours, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- argument checks
def test_bad_arguments_say_what_to_do():
    with pytest.raises(ArgumentTypeError, match="needs a diffusion-schemes noise schedule"):
        as_physicsnemo(42)
    with pytest.raises(ds.UnknownSchemeError):
        as_physicsnemo("no_such_schedule")
    with pytest.raises(InvalidArgumentError, match="time must be one of"):
        as_physicsnemo("edm", time="sigma")
    scheduler = as_physicsnemo("edm")
    assert as_physicsnemo(scheduler).schedule is scheduler.schedule
    with pytest.raises(InvalidArgumentError, match="unknown argument"):
        scheduler.get_denoiser(x0_predictor=lambda x, t: x, sigma_fn=None)
    with pytest.raises(InvalidArgumentError, match="exactly one predictor"):
        scheduler.get_denoiser()
    with pytest.raises(InvalidArgumentError, match="shape \\(B,\\)"):
        scheduler.add_noise(torch.zeros(2, 3), torch.ones(2, 1))
    with pytest.raises(InvalidArgumentError, match="2 samples"):
        scheduler.add_noise(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(InvalidArgumentError, match="noise must be shaped"):
        scheduler.add_noise(torch.zeros(2, 3), torch.ones(2), noise=torch.zeros(2, 4))
    with pytest.raises(InvalidArgumentError, match="positive number"):
        scheduler.sample_time(0)
    with pytest.raises(InvalidArgumentError, match="tN must be"):
        scheduler.init_latents((3,), torch.ones(2, 1))
    with pytest.raises(ArgumentTypeError, match="callable"):
        scheduler.diffusion_model(3)
    with pytest.raises(ArgumentTypeError, match="PhysicsNeMo preconditioner"):
        from_physicsnemo(torch.nn.Linear(2, 2))


def test_physicsnemo_lookalike_outside_physicsnemo_is_refused():
    """Only classes defined in PhysicsNeMo's package count, not any class of the same name."""
    EDMPrecond = type("EDMPrecond", (torch.nn.Module,), {})
    with pytest.raises(ArgumentTypeError, match="got EDMPrecond"):
        from_physicsnemo(EDMPrecond())


# ---------------------------------------------------------------------- the class-labels adapter
def _echo(x, noise_labels, class_labels=None, **kwargs):
    """A network that shows what it received: the input, plus the labels' sum per sample."""
    extra = 0 if class_labels is None else class_labels.sum(dim=1).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.cat([x + extra, noise_labels.reshape(-1, *([1] * (x.ndim - 1))).expand_as(x[:, :1])], dim=1)


def test_adapter_routes_tensor_and_tensordict_labels():
    x, t = torch.zeros(2, 1, 2, 2), torch.tensor([3.0, 4.0])
    labels = torch.tensor([[1.0, 2.0], [0.0, 5.0]])
    by_tensor = ClassLabelsAdapter(_echo)(x, t, labels)
    by_dict = ClassLabelsAdapter(_echo)(x, t, TensorDict({"class_labels": labels}, batch_size=[2]))
    assert torch.equal(by_tensor, by_dict)
    assert by_tensor[:, 0, 0, 0].tolist() == [3.0, 5.0] and by_tensor[:, 1, 0, 0].tolist() == [3.0, 4.0]
    assert ClassLabelsAdapter(_echo)(x, t)[:, 0].abs().sum() == 0          # no condition: no labels


def test_adapter_concatenates_an_image_and_keeps_channels():
    x, t = torch.zeros(2, 1, 2, 2), torch.ones(2)
    image = torch.full((2, 1, 2, 2), 7.0)
    model = ClassLabelsAdapter(_echo, key="y", concat_key="img", out_channels=2)
    out = model(x, t, TensorDict({"img": image, "y": torch.ones(2, 3)}, batch_size=[2]))
    assert out.shape == (2, 2, 2, 2)               # 1 + 1 image channels in, 3 out, first 2 kept
    assert out[:, 0].eq(3.0).all() and out[:, 1].eq(10.0).all()


def test_adapter_legacy_label_handling():
    x, t = torch.zeros(2, 1, 2, 2), torch.ones(2)
    seen = {}

    def net(x, noise_labels, class_labels=None):
        seen["labels"] = class_labels
        return x

    model = ClassLabelsAdapter(net, label_dim=3)
    model(x, t)
    assert seen["labels"].shape == (1, 3) and not seen["labels"].any()
    model(x, t, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(seen["labels"], torch.arange(6.0).reshape(2, 3))


def test_adapter_refuses_what_it_would_drop():
    x, t = torch.zeros(2, 1, 2, 2), torch.ones(2)
    with pytest.raises(ConditionError, match=r"\['other'\]"):
        ClassLabelsAdapter(_echo)(x, t, TensorDict({"class_labels": torch.ones(2, 1), "other": torch.ones(2)}, batch_size=[2]))
    with pytest.raises(ConditionError, match="batch size"):
        ClassLabelsAdapter(_echo)(x, t, torch.ones(3, 2))
    with pytest.raises(ConditionError, match="once"):
        ClassLabelsAdapter(_echo)(x, t, torch.ones(2, 2), class_labels=torch.ones(2, 2))
    with pytest.raises(InvalidArgumentError, match="different entries"):
        ClassLabelsAdapter(_echo, key="a", concat_key="a")
    with pytest.raises(InvalidArgumentError, match="label_dim"):
        ClassLabelsAdapter(_echo, label_dim=0)
    with pytest.raises(ArgumentTypeError, match="key"):
        ClassLabelsAdapter(_echo, key=None)
    with pytest.raises(ArgumentTypeError, match="callable"):
        ClassLabelsAdapter("net")


def test_adapter_inside_a_preconditioner_trains_and_samples():
    net = torch.nn.Conv2d(2, 1, 1)
    model = ClassLabelsAdapter(lambda x, c, class_labels=None: net(torch.cat([x, class_labels[:, :, None, None].expand_as(x)], 1)))
    precond = ds.create("preconditioner", "edm", model=model)
    schedule = ds.create("noise_schedule", "edm")
    condition = TensorDict({"class_labels": torch.randn(4, 1)}, batch_size=[4])
    ds.MSEDSMLoss(precond, schedule)(torch.randn(4, 1, 3, 3), condition=condition).backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    result = ds.sample(precond, schedule.init_latents((4, 1, 3, 3)), schedule, num_steps=3, condition=condition)
    assert result.samples.shape == (4, 1, 3, 3) and bool(torch.isfinite(result.samples).all())


# ---------------------------------------------------------------------- light without PhysicsNeMo
def test_nothing_here_imports_physicsnemo():
    code = (
        "import sys, torch\n"
        "import diffusion_schemes_physicsnemo as p\n"
        "s = p.as_physicsnemo('vp'); s.timesteps(3); s.add_noise(torch.zeros(1, 2), torch.ones(1))\n"
        "p.ClassLabelsAdapter(lambda x, t, class_labels=None: x); p.from_physicsnemo\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'physicsnemo'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exports():
    import diffusion_schemes_physicsnemo as package

    assert set(package.__all__) <= set(dir(package))
    assert all(callable(getattr(package, name)) for name in package.__all__)
    assert isinstance(as_physicsnemo("edm"), PhysicsNeMoScheduler)
