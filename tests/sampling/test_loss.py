"""MSEDSMLoss against the DSM formula written out by hand, per prediction type, weighting and reduction."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.sampling import PREDICTION_TYPES
from diffusion_schemes_vp import VPNoiseSchedule

BETA_D, BETA_MIN, SIGMA_DATA = 19.9, 0.1, 0.5


def vp_log_snr(t):
    """lambda(t) = -log(exp(beta_d t^2 / 2 + beta_min t) - 1) (Karras et al. 2022, Table 1, VP)."""
    return -torch.log(torch.expm1(0.5 * BETA_D * t**2 + BETA_MIN * t))


class Backbone(torch.nn.Module):
    """A tiny backbone that uses its noise input, so a wrong noise level changes the output."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3).double()
        self.noise = torch.nn.Linear(1, 3).double()
        self.calls = []

    def forward(self, x, c, condition=None):
        self.calls.append((c, condition))
        out = self.lin(x) + self.noise(c[:, None].to(x.dtype))
        return out if condition is None else out + condition


def edm_preconditioned(backbone, x, sigma, condition=None):
    """Karras et al. 2022, Table 1 (EDM column): c_skip x + c_out F(c_in x, ln(sigma) / 4)."""
    s = sigma[:, None]
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    return c_skip * x + c_out * backbone(c_in * x, sigma.log() / 4, condition)


def targets(x0, noise, lam):
    s = torch.exp(-lam / 2)[:, None]
    alpha, sigma = torch.sigmoid(lam).sqrt()[:, None], torch.sigmoid(-lam).sqrt()[:, None]
    return {"x0": x0, "epsilon": noise, "v": alpha * noise - sigma * x0, "score": -noise / s}


def snr_weights(lam):
    """1/sigma^2 on x0 (VP's default weighting) = 1 on epsilon, written for each loss (w_eps = 1)."""
    return {"x0": torch.exp(lam), "epsilon": torch.ones_like(lam), "v": torch.sigmoid(lam), "score": torch.exp(-lam)}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.4, 0.7, 1.0], dtype=torch.float64)
    return x0, noise, t


def test_edm_preconditioner_on_vp_schedule(batch, prediction_type="x0"):
    """A mixed pair: the EDM preconditioner reached with the VP schedule's noise level."""
    x0, noise, t = batch
    backbone = Backbone()
    precond = ds.create("preconditioner", {"name": "edm", "sigma_data": SIGMA_DATA}, model=backbone)
    loss_fn = ds.MSEDSMLoss(precond, ds.create("noise_schedule", "vp"), prediction_type=prediction_type)
    loss = loss_fn(x0, t=t, noise=noise)
    lam = vp_log_snr(t)
    sigma = torch.exp(-lam / 2)
    out = edm_preconditioned(backbone, x0 + sigma[:, None] * noise, sigma)
    weight, target = snr_weights(lam)[prediction_type][:, None], targets(x0, noise, lam)[prediction_type]
    expected = (weight * (out - target) ** 2).mean()
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in backbone.parameters())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "score"])
def test_a_preconditioner_trains_only_as_an_x0_predictor(prediction_type):
    """Its output is D = c_skip x + c_out F; regressing that on noise would be a silent mistake."""
    precond = ds.create("preconditioner", "edm", model=Backbone())
    schedule = ds.create("noise_schedule", "vp")
    with pytest.raises(ds.PairingError, match=f"EDMPreconditioner is a preconditioner.*prediction of '{prediction_type}'"):
        ds.MSEDSMLoss(precond, schedule, prediction_type=prediction_type)
    with pytest.raises(ds.PairingError, match="x0-prediction"):
        ds.MSEDSMLoss(functools.partial(precond, condition=None), schedule, prediction_type=prediction_type)
    predictor = {"epsilon": "epsilon_predictor", "score": "score_predictor"}.get(prediction_type)
    if predictor:
        with pytest.raises(ds.PairingError, match="get_denoiser: EDMPreconditioner is a preconditioner"):
            schedule.get_denoiser(**{predictor: precond})


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_plain_model_gets_the_schedules_time(batch, prediction_type):
    x0, noise, t = batch
    backbone = Backbone()
    condition = torch.randn(5, 3, dtype=torch.float64)
    loss_fn = ds.MSEDSMLoss(backbone, ds.create("noise_schedule", "vp"), prediction_type=prediction_type,
                            reduction="none")
    loss = loss_fn(x0, t=t, noise=noise, condition=condition)
    (c, cond), = backbone.calls
    assert c is t or torch.equal(c, t)
    assert cond is condition  # passed through untouched
    lam = vp_log_snr(t)
    x_hat = x0 + torch.exp(-lam / 2)[:, None] * noise
    out = backbone.lin(x_hat) + backbone.noise(t[:, None]) + condition
    expected = snr_weights(lam)[prediction_type][:, None] * (out - targets(x0, noise, lam)[prediction_type]) ** 2
    assert loss.shape == x0.shape
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)


def test_edm_weighting_on_the_edm_schedule(batch):
    x0, noise, _ = batch
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 60.0], dtype=torch.float64)
    backbone = Backbone()
    precond = ds.create("preconditioner", "edm", model=backbone)
    loss = ds.MSEDSMLoss(precond, ds.create("noise_schedule", "edm"))(x0, t=sigma, noise=noise)
    weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2  # Karras et al. 2022, eq. 8 / Table 1
    out = edm_preconditioned(backbone, x0 + sigma[:, None] * noise, sigma)
    assert torch.allclose(loss, (weight[:, None] * (out - x0) ** 2).mean(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("prediction_type", ["x0", "epsilon", "v"])
def test_weighting_choices(batch, prediction_type):
    x0, noise, t = batch
    backbone = Backbone()
    lam = vp_log_snr(t)

    def loss_with(weighting, schedule=None):
        schedule = schedule or ds.create("noise_schedule", "vp")
        return ds.MSEDSMLoss(backbone, schedule, prediction_type, weighting=weighting, reduction="none")(
            x0, t=t, noise=noise
        )

    unweighted = loss_with(1.0)
    assert torch.allclose(loss_with(None, ds.create("noise_schedule", {"name": "vp", "weighting": None})), unweighted)
    assert torch.allclose(loss_with(2.5), 2.5 * unweighted)
    # likelihood weighting: -lambda'(t) on the epsilon-loss, converted (autograd for lambda')
    tt = t.clone().requires_grad_(True)
    (dlam,) = torch.autograd.grad(vp_log_snr(tt).sum(), tt)
    to_type = {"x0": torch.exp(lam), "epsilon": torch.ones_like(lam), "v": torch.sigmoid(lam)}[prediction_type]
    expected = (-dlam * to_type)[:, None] * unweighted
    as_object = ds.create("weighting", "likelihood_weighting")
    for given in ("likelihood_weighting", {"name": "likelihood_weighting"}, as_object):
        assert torch.allclose(loss_with(given), expected, rtol=1e-8)


def test_reductions(batch):
    x0, noise, t = batch
    backbone = Backbone()
    schedule = ds.create("noise_schedule", "vp")
    per_element = ds.MSEDSMLoss(backbone, schedule, reduction="none")(x0, t=t, noise=noise)
    assert per_element.shape == x0.shape
    assert torch.allclose(ds.MSEDSMLoss(backbone, schedule, reduction="sum")(x0, t=t, noise=noise), per_element.sum())
    assert torch.allclose(ds.MSEDSMLoss(backbone, schedule)(x0, t=t, noise=noise), per_element.mean())


def test_time_and_noise_drawn_from_the_schedule(batch):
    x0, _, _ = batch
    schedule = ds.create("noise_schedule", "vp")
    loss_fn = ds.MSEDSMLoss(Backbone(), schedule, reduction="none")
    drawn = loss_fn(x0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = schedule.sample_time(5, generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    assert torch.allclose(drawn, loss_fn(x0, t=t, noise=noise))


def test_low_discrepancy_draws_one_time_per_stratum():
    loss_fn = ds.MSEDSMLoss(Backbone(), VPNoiseSchedule(), low_discrepancy=True)
    t = loss_fn.sample_time(8, generator=torch.Generator().manual_seed(0)).double()
    u = (t - 1e-5) / (1 - 1e-5)  # the VP training distribution is U(epsilon_t, 1)
    strata = torch.arange(8)
    assert bool(((u >= strata / 8) & (u < (strata + 1) / 8)).all())
    gaps = torch.diff(u)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 8))  # one common offset


@pytest.mark.parametrize("scheme", ["edm", "ve", "vp", "iddpm"])
def test_stratified_times_follow_each_training_distribution(scheme):
    """time_from_uniform is the training distribution's inverse CDF: the empirical CDF of the
    stratified draws at each draw is within one stratum of the CDF the plain draws give."""
    schedule = ds.create("noise_schedule", scheme)
    loss_fn = ds.MSEDSMLoss(Backbone(), schedule, low_discrepancy=True)
    n = 4096
    stratified = loss_fn.sample_time(n, generator=torch.Generator().manual_seed(1)).double().sort().values
    plain = schedule.sample_time(200_000, generator=torch.Generator().manual_seed(2)).double().sort().values
    cdf = torch.searchsorted(plain, stratified, right=True).double() / plain.numel()
    expected = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    # one stratum (1/n) plus the DKW bound of the 200k plain draws at 1e-6 false alarm
    assert float((cdf - expected).abs().max()) < 1 / n + (math.log(2 / 1e-6) / (2 * plain.numel())) ** 0.5


class NoInverse(VPNoiseSchedule):
    """A schedule that draws its training times without stating their inverse CDF."""

    time_from_uniform = ds.BaseNoiseSchedule.time_from_uniform

    def sample_time(self, n, generator=None, device=None):
        return self.epsilon_t + (1 - self.epsilon_t) * torch.rand(n, generator=generator, device=device)


def test_low_discrepancy_needs_an_inverse_cdf():
    with pytest.raises(ValueError, match="time_from_uniform"):
        ds.MSEDSMLoss(Backbone(), NoInverse(), low_discrepancy=True)


def test_bad_arguments(batch):
    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    with pytest.raises(ValueError, match="unknown prediction_type 'eps'"):
        ds.MSEDSMLoss(Backbone(), schedule, prediction_type="eps")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        ds.MSEDSMLoss(Backbone(), schedule, reduction="avg")
    with pytest.raises(ds.UnknownSchemeError, match="no weighting named 'uniform'"):
        ds.MSEDSMLoss(Backbone(), schedule, weighting="uniform")
    loss_fn = ds.MSEDSMLoss(Backbone(), schedule)
    with pytest.raises(ds.ConditionError, match="batch size is 4 but the latent's is 5"):
        loss_fn(x0, t=t, noise=noise, condition=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"t must have shape \(5,\)"):
        loss_fn(x0, t=t[:3], noise=noise)
    with pytest.raises(ValueError, match="noise must be shaped like x0"):
        loss_fn(x0, t=t, noise=noise[:, :2])


def test_float32_loss_matches_float64(batch):
    x0, noise, t = batch
    backbone = Backbone()
    precond = ds.create("preconditioner", "edm", model=backbone)
    schedule = ds.create("noise_schedule", "vp")
    loss64 = ds.MSEDSMLoss(precond, schedule)(x0, t=t, noise=noise)
    backbone.float()
    loss32 = ds.MSEDSMLoss(precond, schedule)(x0.float(), t=t.float(), noise=noise.float())
    assert loss32.dtype == torch.float32
    assert math.isclose(loss32.item(), loss64.item(), rel_tol=1e-5)


class Recorder(torch.nn.Module):
    """A model that records the conditions it is called with and returns x + condition."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, condition=None):
        self.calls.append((x.shape[0], None if condition is None else condition.clone()))
        return x if condition is None else x + condition


@pytest.mark.parametrize("null", ["tensor", "none"])
def test_condition_dropout_replaces_dropped_samples(batch, null):
    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    condition = torch.arange(1.0, 6.0, dtype=torch.float64)[:, None].expand(5, 3)
    null_condition = torch.full((1, 3), -7.0, dtype=torch.float64) if null == "tensor" else None
    model = Recorder()
    loss = ds.MSEDSMLoss(model, schedule, weighting=1.0, reduction="none", condition_dropout=0.5,
                         null_condition=null_condition)
    out = loss(x0, t=t, noise=noise, condition=condition, generator=torch.Generator().manual_seed(2))
    dropped = torch.rand(5, generator=torch.Generator().manual_seed(2)) < 0.5  # the loss's draw, same generator
    assert 0 < int(dropped.sum()) < 5
    used = torch.where(dropped[:, None], -7.0 if null == "tensor" else 0.0, condition)
    level = torch.exp(-vp_log_snr(t) / 2)[:, None]
    x_hat = x0 + level * noise
    assert torch.allclose(out, (x_hat + used - x0) ** 2, rtol=1e-12, atol=1e-12)
    if null == "none":  # two calls: the kept samples with their condition, the dropped ones with none
        assert [(n, c is None) for n, c in model.calls] == [(int((~dropped).sum()), False), (int(dropped.sum()), True)]
    else:
        assert len(model.calls) == 1


def test_condition_dropout_rate_and_extremes(batch):
    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    big = torch.randn(4000, 3, dtype=torch.float64)
    condition = torch.ones(4000, 1, dtype=torch.float64)
    model = Recorder()
    ds.MSEDSMLoss(model, schedule, condition_dropout=0.1, null_condition=torch.zeros(1, 1, dtype=torch.float64))(
        big, condition=condition, generator=torch.Generator().manual_seed(0))
    rate = 1 - float(model.calls[-1][1].mean())
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / 4000) ** 0.5  # binomial: four standard errors
    for p, expected in ((0.0, 1.0), (1.0, 0.0)):
        ds.MSEDSMLoss(model, schedule, condition_dropout=p, null_condition=torch.zeros(1, 1, dtype=torch.float64))(
            big, condition=condition)
        assert float(model.calls[-1][1].mean()) == expected


def test_condition_dropout_bad_input(batch):
    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    for p in (-0.1, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="condition_dropout must be a probability"):
            ds.MSEDSMLoss(Recorder(), schedule, condition_dropout=p)
    loss = ds.MSEDSMLoss(Recorder(), schedule, condition_dropout=1.0, null_condition=torch.zeros(1, 2))
    with pytest.raises(ds.ConditionError, match=r"null condition has shape \(1, 2\) but the condition \(5, 3\)"):
        loss(x0, t=t, condition=torch.ones(5, 3, dtype=torch.float64))


def test_wrong_output_shape_is_an_error_not_a_broadcast(batch):
    from diffusion_schemes.errors import ModelOutputError

    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    for bad in (lambda x, t, condition=None: x[:, :1], lambda x, t, condition=None: x.mean(1)):
        loss = ds.MSEDSMLoss(bad, schedule, reduction="none")
        with pytest.raises(ModelOutputError, match=r"the model returned shape .* but the latent has shape \(5, 3\)"):
            loss(x0, t=t, noise=noise)


def test_condition_dropout_with_tensordicts_and_split_keyword_arguments(batch):
    from tensordict import TensorDict

    x0, noise, t = batch
    schedule = ds.create("noise_schedule", "vp")
    seen = []

    def model(x, t, condition=None, scale=None):
        seen.append((x.shape[0], condition is None, scale.shape[0]))
        shift = 0 if condition is None else condition["shift"]
        return x * scale[:, None] + shift

    condition = TensorDict({"shift": torch.arange(5.0, dtype=torch.float64)[:, None].expand(5, 3)}, batch_size=[5])
    null = TensorDict({"shift": torch.full((1, 3), -1.0, dtype=torch.float64)}, batch_size=[1])
    scale = torch.linspace(1, 2, 5, dtype=torch.float64)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    dropped = torch.rand(5, generator=g()) < 0.5
    level = torch.exp(-vp_log_snr(t) / 2)[:, None]
    x_hat = x0 + level * noise
    with_null = ds.MSEDSMLoss(model, schedule, weighting=1.0, reduction="none", condition_dropout=0.5, null_condition=null)
    out = with_null(x0, t=t, noise=noise, condition=condition, generator=g(), scale=scale)
    used = torch.where(dropped[:, None], -1.0, condition["shift"])
    assert torch.allclose(out, (x_hat * scale[:, None] + used - x0) ** 2, rtol=1e-12, atol=1e-12)
    seen.clear()
    split = ds.MSEDSMLoss(model, schedule, weighting=1.0, reduction="none", condition_dropout=0.5)
    out = split(x0, t=t, noise=noise, condition=condition, generator=g(), scale=scale)
    used = torch.where(dropped[:, None], 0.0, condition["shift"])
    assert torch.allclose(out, (x_hat * scale[:, None] + used - x0) ** 2, rtol=1e-12, atol=1e-12)
    kept = int((~dropped).sum())
    assert seen == [(kept, False, kept), (5 - kept, True, 5 - kept)]  # per-sample keyword arguments split too


def test_weighting_config_may_be_any_mapping():
    from types import MappingProxyType

    schedule = ds.create("noise_schedule", "vp")
    model = lambda x, t, condition=None: torch.zeros_like(x)  # noqa: E731
    as_dict = ds.MSEDSMLoss(model, schedule, weighting={"name": "snr"})
    as_mapping = ds.MSEDSMLoss(model, schedule, weighting=MappingProxyType({"name": "snr"}))
    assert as_mapping.weighting.spec == as_dict.weighting.spec == ds.parse_spec("weighting", "snr")


@pytest.mark.parametrize(("scheme", "bad", "limits"), [
    ("edm", float("nan"), r"\(0, inf\)"), ("edm", -1.0, r"\(0, inf\)"), ("edm", 0.0, r"\(0, inf\)"),
    ("vp", 1.5, r"\(0, 1\]"), ("vp", float("nan"), r"\(0, 1\]"),
])
def test_a_bad_time_given_to_the_loss_is_named_once_per_step(scheme, bad, limits):
    """The loss checks its times once a step, on the device (the preconditioner then skips its own check);
    on the CPU the error names the value and the schedule's training domain."""
    precond = ds.create("preconditioner", scheme, model=lambda x, c_noise, condition=None: torch.zeros_like(x))
    loss = ds.MSEDSMLoss(precond, ds.create("noise_schedule", scheme))
    with pytest.raises(ds.DomainError, match=rf"diffusion time t=\[{bad}\] is outside {limits}, where lambda\(t\) is "
                                             r"defined; this schedule trains on \["):
        loss(torch.zeros(2, 3), t=torch.tensor([0.5, bad]))


def test_the_loss_skips_only_the_preconditioners_check_not_the_value():
    """With valid times the loss equals the preconditioner's checked forward at the schedule's noise level."""
    precond = ds.create("preconditioner", "vp", model=lambda x, c_noise, condition=None: x * c_noise[:, None] / 1000)
    schedule = ds.create("noise_schedule", "vp")
    x0, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.4, 1.0], dtype=torch.float64)
    sigma = schedule.noise_level(t)
    expected = precond.forward_sigma(x0 + sigma[:, None] * noise, sigma)
    weight = torch.exp(schedule.get_log_snr(t))[:, None]  # VP's default weighting: 1/sigma^2 on x0
    got = ds.MSEDSMLoss(precond, schedule, reduction="none")(x0, t=t, noise=noise)
    torch.testing.assert_close(got, weight * (expected - x0) ** 2)


def test_a_schedule_of_the_protocol_only_gives_the_noise_level_through_its_log_snr(batch):
    """A schedule without ``log_snr_and_noise_level`` (only the NoiseSchedule protocol): the loss takes
    ``exp(-lambda / 2)`` of its log-SNR, the same value as the built-in schedule's own pair."""
    x0, noise, t = batch
    vp = ds.create("noise_schedule", "vp")

    class ProtocolOnly:
        weighting = vp.weighting

        def get_log_snr(self, t, training=False):
            return vp_log_snr(torch.as_tensor(t))

        def __getattr__(self, name):  # the rest of the protocol, from the VP schedule
            if name == "log_snr_and_noise_level":
                raise AttributeError(name)
            return getattr(vp, name)

    model = ds.create("preconditioner", {"name": "edm", "sigma_data": SIGMA_DATA}, model=Backbone())
    got = ds.MSEDSMLoss(model, ProtocolOnly(), reduction="none")(x0, t=t, noise=noise)
    sigma = torch.exp(-vp_log_snr(t) / 2)
    out = edm_preconditioned(model.model, x0 + sigma[:, None] * noise, sigma)
    torch.testing.assert_close(got, torch.exp(vp_log_snr(t))[:, None] * (out - x0) ** 2, rtol=1e-10, atol=0)
