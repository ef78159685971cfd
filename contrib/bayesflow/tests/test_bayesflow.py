"""diffusion-schemes schedules inside BayesFlow: conventions, every installed schedule, BayesFlow's own schedules as oracles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any, Literal

os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported

import pytest
import torch

import diffusion_schemes as ds

import bayesflow.networks.inference.diffusion.schedules as bf_schedules  # noqa: E402  (installed by make setup: no skip)
from bayesflow.networks.inference.diffusion import NoiseSchedule  # noqa: E402

from diffusion_schemes_bayesflow import BayesFlowNoiseSchedule, as_bayesflow  # noqa: E402

F64 = torch.float64


def close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Float32 tolerance on values computed in float64."""
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64), rtol=rtol, atol=atol)


def installed_schedules() -> list[str]:
    return [info.name for info in ds.list_schemes("noise_schedule")]


# ---------------------------------------------------------------------- a third-party schedule, registered in-process
class _LogUniformVE(ds.SigmaTimeSchedule):
    """Variance exploding, t = sigma (lambda = -2 ln t), log-uniform training on [0.01, 50], geometric grid."""

    def __init__(self) -> None:
        super().__init__("third_party_ve", None)

    def domain(self, training=False):
        return (0.01, 50.0)

    def time_from_uniform(self, u):
        return 0.01 * 5000.0 ** torch.as_tensor(u, dtype=F64)

    def timesteps(self, num_steps, device=None):
        i = torch.arange(num_steps, dtype=F64, device=device) / max(num_steps - 1, 1)
        return self._with_zero(50.0 * (0.01 / 50.0) ** i)

    def get_config(self):
        return {}


class _ThirdPartySpec(ds.NoiseScheduleSpec):
    name: Literal["third_party_ve"] = "third_party_ve"

    def build(self) -> Any:
        return _LogUniformVE()


@pytest.fixture
def third_party():
    with ds.registry.registered(_ThirdPartySpec, distribution="third-party-ve"):
        yield "third_party_ve"


# ---------------------------------------------------------------------- BayesFlow's conventions, for every schedule
@pytest.mark.parametrize("name", installed_schedules())
def test_every_installed_schedule_speaks_bayesflow(name):
    schedule = as_bayesflow(name)
    assert isinstance(schedule, NoiseSchedule)
    schedule.validate()
    own = schedule.schedule
    t = torch.linspace(0, 1, 101, dtype=F64)
    # training: t is a uniform draw through the schedule's inverse CDF of training times
    close(schedule.get_log_snr(t, training=True), own.get_log_snr(own.time_from_uniform(t), training=True), 1e-12, 0)
    # sampling: t = 1 - u along the grid; at the grid's own points it is the grid (992 steps: iDDPM's table)
    steps = own.timesteps(992)[:-1]
    u = torch.arange(992, dtype=F64) / 991
    close(schedule.get_log_snr(1 - u, training=False), own.get_log_snr(steps))
    for training in (True, False):
        lam = schedule.get_log_snr(t, training=training)
        assert bool((lam[1:] <= lam[:-1]).all()), "lambda must decrease in BayesFlow's t"
        back = schedule.get_log_snr(schedule.get_t_from_log_snr(lam, training=training), training=training)
        close(back, lam, 1e-7, 1e-7)  # the inverse; for a discrete training table, lambda round-trips exactly


def test_a_third_party_schedule_works_by_name(third_party):
    schedule = as_bayesflow(third_party)
    schedule.validate()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    close(schedule.get_log_snr(t, training=True), -2 * torch.log(0.01 * 5000.0**t))
    close(schedule.get_log_snr(t, training=False), -2 * torch.log(0.01 * 5000.0**t))
    close(schedule.get_t_from_log_snr(-2 * math.log(0.01 * 5000.0**0.25), training=False), 0.25)
    # variance exploding: g^2 = d sigma^2 / dt with sigma = 0.01 * 5000^t
    lam = schedule.get_log_snr(t, training=False)
    close(schedule.get_drift(lam), 2 * math.log(5000.0) * (0.01 * 5000.0**t) ** 2)


class _LogSNRUniform:
    """A discretization's continuous map, written here: sigma_max (sigma_min / sigma_max)^u, uniform in lambda."""

    def sigma_at(self, u, schedule):
        lo, hi = (float(v) for v in schedule.noise_level(torch.tensor(schedule.domain(), dtype=F64)))
        return hi * (lo / hi) ** torch.as_tensor(u, dtype=F64)


def test_a_discretization_sets_the_sampling_map():
    ours = as_bayesflow("vp", discretization=_LogSNRUniform())
    own = ds.create("noise_schedule", "vp")
    lam_hi, lam_lo = (float(v) for v in own.get_log_snr(torch.tensor(own.domain(), dtype=F64)))
    t = torch.linspace(0, 1, 101, dtype=F64)
    close(ours.get_log_snr(t, training=False), lam_hi + t * (lam_lo - lam_hi))  # linear in t
    close(ours.get_t_from_log_snr(lam_hi + t * (lam_lo - lam_hi), training=False), t)
    close(ours.get_log_snr(t, training=True), as_bayesflow("vp").get_log_snr(t, training=True), 0, 0)
    with pytest.raises(TypeError, match="cannot be described by name"):
        ours.get_config()


def test_other_backends_go_through_numpy(monkeypatch):
    """Off the torch backend, BayesFlow's tensors are converted through NumPy (here: NumPy arrays, backend name patched)."""
    import keras
    import numpy as np

    ours = as_bayesflow("vp")
    expected = ours.get_log_snr(torch.tensor([0.25, 0.75]), training=False)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    got = ours.get_log_snr(np.array([0.25, 0.75], dtype=np.float32), training=False)
    assert not isinstance(got, np.ndarray)  # a tensor of the backend (keras.ops.convert_to_tensor)
    close(keras.ops.convert_to_numpy(got), expected, 0, 0)


def test_time_outside_the_unit_interval_is_a_clear_error():
    schedule = as_bayesflow("vp")
    with pytest.raises(ds.DomainError, match=r"t must lie in \[0, 1\]"):
        schedule.get_log_snr(torch.tensor([0.5, 1.5]), training=False)
    close(schedule.get_log_snr(torch.tensor([-1e-12]), training=False), [schedule.log_snr_max], 1e-6, 1e-5)


def test_dtypes_follow_bayesflow():
    schedule = as_bayesflow("edm")
    assert schedule.get_log_snr(0.5, training=False).dtype == torch.float32  # Keras' floatx for numbers
    assert schedule.get_log_snr(torch.tensor([0.5], dtype=F64), training=True).dtype == F64
    lam = torch.tensor([[0.0]])
    f, g2 = schedule.get_drift(log_snr_t=lam, x=torch.ones(1, 3), training=False)
    assert f.shape == (1, 3) and g2.shape == (1, 1) and f.dtype == g2.dtype == torch.float32


# ---------------------------------------------------------------------- weights: noise-prediction, ones without weighting
def test_weights_are_noise_prediction_weights():
    lam = torch.linspace(-6, 6, 13, dtype=F64)
    close(as_bayesflow("vp").get_weights_for_snr(lam), torch.ones_like(lam))  # 1/sigma^2 on x0 = uniform on epsilon
    close(as_bayesflow({"name": "vp", "weighting": None}).get_weights_for_snr(log_snr_t=lam), torch.ones_like(lam))
    close(as_bayesflow({"name": "vp", "weighting": "sigmoid"}).get_weights_for_snr(lam), torch.sigmoid(2 - lam))
    # EDM's weighting (sigma^2 + sd^2) / (sigma sd)^2 on the x0-loss is 1 + sigma^2 / sd^2 on epsilon
    close(as_bayesflow("edm").get_weights_for_snr(lam), 1 + torch.exp(-lam) / 0.5**2)


# ---------------------------------------------------------------------- BayesFlow's EDM schedule, configured alike
EDM_LIKE = {"sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0}


def _edm_sigma(t: torch.Tensor) -> torch.Tensor:
    """Karras et al. 2022 eq. 5 at grid fraction u = 1 - t (rho = 7)."""
    a, b = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    return (a + (1 - t) * (b - a)) ** 7


@pytest.mark.parametrize("variance_type", ["exploding", "preserving"])
def test_edm_log_snr_and_time_match_bayesflow(variance_type):
    theirs = bf_schedules.EDMNoiseSchedule(**EDM_LIKE, variance_type=variance_type)
    ours = as_bayesflow({"name": "edm", "sigma_data": 0.5})
    assert (ours.log_snr_min, ours.log_snr_max) == pytest.approx((float(theirs.log_snr_min), float(theirs.log_snr_max)))
    # BayesFlow clips training lambda to [lambda_min - 1, lambda_max + 1]: inside it, t in [1e-5, 1 - 1e-5]
    t = torch.linspace(1e-5, 1 - 1e-5, 201, dtype=F64)
    for training in (True, False):
        close(ours.get_log_snr(t, training=training), theirs.get_log_snr(t, training=training))
        lam = theirs.get_log_snr(t, training=training)
        close(ours.get_t_from_log_snr(lam, training=training), theirs.get_t_from_log_snr(lam, training=training))
    close(ours.get_log_snr(t, training=False), -2 * torch.log(_edm_sigma(t)))
    # where BayesFlow clips, ours goes on along the log-normal (finite: u kept 1e-12 off 0 and 1)
    edge = ours.get_log_snr(torch.tensor([0.0, 1.0], dtype=F64), training=True)
    assert bool(torch.isfinite(edge).all()) and float(edge[0]) > theirs.log_snr_max + 1


def test_edm_alpha_sigma_weights_and_beta_match_bayesflow():
    theirs = bf_schedules.EDMNoiseSchedule(**EDM_LIKE, variance_type="exploding")
    ours = as_bayesflow({"name": "edm", "sigma_data": 0.5})
    lam = ours.get_log_snr(torch.linspace(0, 1, 101, dtype=F64), training=False)
    for a, b in zip(ours.get_alpha_sigma(lam), theirs.get_alpha_sigma(lam)):
        close(a, b)
    close(ours.get_weights_for_snr(lam), theirs.get_weights_for_snr(lam))
    close(ours.derivative_log_snr(lam, training=False), theirs.derivative_log_snr(lam, training=False), 1e-6, 1e-9)


def test_bayesflow_default_edm_reproduced():
    """BayesFlow's EDMNoiseSchedule() defaults: sigma_data = 1, sigma_min = 1e-4, variance preserving."""
    theirs = bf_schedules.EDMNoiseSchedule()
    ours = as_bayesflow({"name": "edm", "sigma_data": 1.0, "sigma_min": 1e-4}, variance_type="preserving")
    assert ours.schedule.variance_type == "preserving" and ours.sigma_data == 1.0
    t = torch.linspace(1e-5, 1 - 1e-5, 201, dtype=F64)
    for training in (True, False):
        close(ours.get_log_snr(t, training=training), theirs.get_log_snr(t, training=training))
    lam = ours.get_log_snr(t, training=False)
    for a, b in zip(ours.get_alpha_sigma(lam), theirs.get_alpha_sigma(lam)):
        close(a, b)
    close(ours.get_weights_for_snr(lam), theirs.get_weights_for_snr(lam))
    x = torch.randn(201, 2, dtype=F64)
    for a, b in zip(ours.get_drift(lam[:, None], x=x), theirs.get_drift(lam[:, None], x=x)):  # f = -beta/2 x, g^2 = beta
        close(a, b, 1e-6, 1e-9)
    # the same noise level sigma / alpha = exp(-lambda / 2) as the variance-exploding original
    alpha, sigma = ours.get_alpha_sigma(lam)
    close(sigma / alpha, torch.exp(-lam / 2), 1e-12, 0)


def test_edm_drift_and_diffusion_where_bayesflow_differs():
    """Variance exploding: ours is g^2 = d sigma^2/dt = beta (1 + exp(-lambda)); BayesFlow uses beta itself."""
    theirs = bf_schedules.EDMNoiseSchedule(**EDM_LIKE, variance_type="exploding")
    ours = as_bayesflow({"name": "edm", "sigma_data": 0.5})
    t = torch.linspace(0, 1, 101, dtype=F64)
    lam = ours.get_log_snr(t, training=False)
    x = torch.randn(101, 2, dtype=F64)
    f, g2 = ours.get_drift(lam[:, None], x=x, training=False)
    f_bf, beta = theirs.get_drift(lam[:, None], x=x, training=False)
    close(f, torch.zeros_like(f))
    close(f_bf, torch.zeros_like(f_bf))
    close(g2, beta * (1 + torch.exp(-lam[:, None])), 1e-6, 1e-9)
    # an independent derivation: d sigma^2 / dt of eq. 5 at u = 1 - t
    a, b = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    dsigma2_dt = 2 * _edm_sigma(t) * 7 * (a + (1 - t) * (b - a)) ** 6 * (a - b)
    close(g2[:, 0], dsigma2_dt, 1e-6, 1e-9)


# ---------------------------------------------------------------------- BayesFlow's cosine schedule, configured alike
#: BayesFlow's cosine schedule in float32 where its slope is steepest (see test_cosine_matches_bayesflow).
BF32 = 2e-4


def _cosine_pair(shift: float) -> tuple[Any, Any, tuple[float, float], tuple[float, float]]:
    """Theirs and ours, with the truncation bounds (t_min, t_max) each uses: BayesFlow stores its own in float32."""
    theirs = bf_schedules.CosineNoiseSchedule(min_log_snr=-15, max_log_snr=15, shift=shift, weighting="sigmoid")
    ours = as_bayesflow({"name": "cosine", "shift": shift, "weighting": "sigmoid"})
    exact = tuple(2 / math.pi * math.atan(math.exp(shift - v / 2)) for v in (15.0, -15.0))
    return theirs, ours, exact, (float(theirs._t_min), float(theirs._t_max))


def _cosine_log_snr(t: torch.Tensor, shift: float, bounds: tuple[float, float]) -> torch.Tensor:
    """lambda = -2 log tan(pi s / 2) + 2 shift at s = t_min + (t_max - t_min) t (Kingma & Gao 2023, eq. 41)."""
    s = bounds[0] + (bounds[1] - bounds[0]) * t
    return -2 * torch.log(torch.tan(math.pi * s / 2)) + 2 * shift


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_cosine_matches_bayesflow(shift):
    theirs, ours, exact, theirs_bounds = _cosine_pair(shift)
    assert (ours.log_snr_min, ours.log_snr_max) == pytest.approx((-15, 15), abs=1e-9)
    t = torch.linspace(0, 1, 201, dtype=F64)
    for training in (True, False):
        lam = ours.get_log_snr(t, training=training)
        close(lam, _cosine_log_snr(t, shift, exact), 1e-12, 1e-12)
        # the same map; BayesFlow keeps its bounds as float32 tensors, and near the ends lambda's slope
        # (|d lambda/dt| up to 6e3) turns float32 rounding into up to 1e-4 relative
        close(theirs.get_log_snr(t, training=training), _cosine_log_snr(t, shift, theirs_bounds), BF32, 1e-6)
        close(lam, theirs.get_log_snr(t, training=training), BF32, 1e-6)
    lam = ours.get_log_snr(t, training=False)
    for a, b in zip(ours.get_alpha_sigma(lam), theirs.get_alpha_sigma(lam)):
        close(a, b, 1e-12, 1e-12)
    close(ours.get_weights_for_snr(lam), theirs.get_weights_for_snr(lam), 1e-12, 1e-12)
    # variance preserving: BayesFlow's own drift formula (f = -beta/2 x, g^2 = beta) applied to our beta is ours
    x = torch.randn(201, 3, dtype=F64)
    for a, b in zip(ours.get_drift(lam[:, None], x=x), NoiseSchedule.get_drift(ours, lam[:, None], x=x)):
        close(a, b, 1e-12, 1e-12)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_cosine_time_from_log_snr_where_bayesflow_differs(shift):
    """BayesFlow's get_t_from_log_snr returns the untruncated cosine time s, not the t in [0, 1] that its
    get_log_snr maps through s = t_min + (t_max - t_min) t; ours inverts get_log_snr. beta differs only by that t."""
    theirs, ours, exact, theirs_bounds = _cosine_pair(shift)
    t = torch.linspace(0, 1, 201, dtype=F64)
    lam = ours.get_log_snr(t, training=False)
    close(ours.get_t_from_log_snr(lam, training=False), t, 1e-9, 1e-12)
    close(theirs.get_t_from_log_snr(lam, training=False), exact[0] + (exact[1] - exact[0]) * t, 1e-9, 1e-12)

    def beta_at(tt: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:  # -lambda'(t) sigmoid(-lambda)
        s = bounds[0] + (bounds[1] - bounds[0]) * tt
        return 2 * math.pi / torch.sin(math.pi * s) * (bounds[1] - bounds[0]) * torch.sigmoid(-lam)

    close(ours.derivative_log_snr(lam, training=False), beta_at(t, exact), 1e-9, 1e-9)
    theirs_t = theirs.get_t_from_log_snr(lam, training=False)
    close(theirs.derivative_log_snr(lam, training=False), beta_at(theirs_t, theirs_bounds), BF32, 1e-6)
    assert not torch.allclose(ours.derivative_log_snr(lam, training=False)[-5:], theirs.derivative_log_snr(lam, training=False)[-5:], rtol=1e-2)


# ---------------------------------------------------------------------- config, serialisation
def test_config_round_trip_and_bayesflow_shaped_configs():
    ours = as_bayesflow({"name": "edm", "sigma_data": 1.0, "weighting": None})
    config = ours.get_config()
    assert config["name"] == "edm" and config["variance_type"] == "exploding"
    again = BayesFlowNoiseSchedule.from_config(config)
    assert again.schedule == ours.schedule and again.sigma_data == 1.0
    built = BayesFlowNoiseSchedule.from_config({"name": "vp", "variance_type": "preserving"})
    assert built.schedule == ds.create("noise_schedule", "vp")
    with pytest.raises(ds.SchemeConfigError, match="states its own alpha and sigma"):
        BayesFlowNoiseSchedule.from_config({"name": "flow_matching", "variance_type": "preserving"})
    preserving = BayesFlowNoiseSchedule.from_config(as_bayesflow("edm", variance_type="preserving").get_config())
    assert preserving.get_config()["variance_type"] == "preserving"
    with pytest.raises(ds.UnknownSchemeError):
        as_bayesflow("no_such_schedule")


def test_keras_serialisation_round_trip():
    from bayesflow.utils.serialization import deserialize, serialize

    ours = as_bayesflow({"name": "cosine", "shift": 0.5})
    again = deserialize(serialize(ours))
    assert type(again) is BayesFlowNoiseSchedule and again.schedule == ours.schedule


# ---------------------------------------------------------------------- the core and the process stay as they were
def _run(code: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_diffusion_schemes_does_not_import_bayesflow_or_keras():
    code = (
        "import sys, diffusion_schemes as ds, diffusion_schemes_bayesflow\n"
        "ds.list_schemes()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bayesflow', 'keras')))"
    )
    assert _run(code) == "[]"


def test_importing_the_adapter_keeps_torch_autograd_on():
    """BayesFlow turns torch autograd off when first imported; the adapter restores the caller's mode."""
    assert _run("import torch\nfrom diffusion_schemes_bayesflow import as_bayesflow\nprint(torch.is_grad_enabled())") == "True"


# ---------------------------------------------------------------------------------------- bad input (issue 25)


def test_as_bayesflow_of_none_is_a_clear_error():
    with pytest.raises(ds.DiffusionSchemesError, match="as_bayesflow needs a noise schedule"):
        as_bayesflow(None)


def test_from_config_with_an_extra_key_names_it():
    config = as_bayesflow("vp").get_config()
    assert BayesFlowNoiseSchedule.from_config(config).get_config() == config  # the round trip still holds
    with pytest.raises(ds.SchemeConfigError, match="unknown key\\(s\\) beta_min"):
        BayesFlowNoiseSchedule.from_config({**config, "beta_min": 0.1})


def test_get_weights_for_snr_refuses_nan_instead_of_weighting_it():
    schedule = as_bayesflow("edm")
    weights = schedule.get_weights_for_snr(torch.tensor([0.0, 2.0], dtype=F64))
    assert bool(torch.isfinite(torch.as_tensor(weights)).all())
    with pytest.raises(ds.DomainError, match="NaN log-SNR"):
        schedule.get_weights_for_snr(torch.tensor([0.0, float("nan")], dtype=F64))
