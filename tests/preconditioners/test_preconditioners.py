"""The four built-in preconditioners against float64 formulas of Karras et al. 2022, Table 1.

Coefficients are read off ``forward`` through a probe backbone: with ``x = 1`` and a zero
output the preconditioner returns ``c_skip`` and feeds the backbone ``c_in`` and ``c_noise``;
with ``x = 0`` and a unit output it returns ``c_out``. So they are checked as they act.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scheme_reference import F64, REFS, SCHEMES, U, VP, time_grid

import diffusion_schemes as ds
from diffusion_schemes.preconditioners.affine import compute_dtype

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Probe(torch.nn.Module):
    """Records what it receives and returns ``self.out`` broadcast to its input."""

    def __init__(self):
        super().__init__()
        self.out = 0.0

    def forward(self, x, c_noise, condition=None):
        self.x_in, self.c_noise = x, c_noise
        return torch.full_like(x, self.out)


def build(name):
    probe = Probe()
    return ds.create("preconditioner", name, model=probe), probe, ds.create("noise_schedule", name)


def measure(precond, probe, level, dtype, by_time=False):
    """``(c_in, c_noise, c_out, c_skip)`` as they act in forward, for a batch of noise levels (or times)."""
    call = precond.forward if by_time else precond.forward_sigma
    shape = (len(level), 2, 3)
    probe.out = 0.0
    c_skip = call(torch.ones(shape, dtype=dtype), level)
    c_in, c_noise = probe.x_in, probe.c_noise
    probe.out = 1.0
    c_out = call(torch.zeros(shape, dtype=dtype), level)
    for c in (c_in, c_skip, c_out):
        assert c.dtype == dtype and c.shape == shape
        assert bool((c == c[:, :1, :1]).all())  # one value per sample, broadcast
    return c_in[:, 0, 0], c_noise, c_out[:, 0, 0], c_skip[:, 0, 0]


def noise_levels(name):
    """0.002 to 80 (every scheme must handle EDM's range) and the scheme's own sampling and training range."""
    ref = REFS[name]
    grids = [np.geomspace(0.002, 80, 33)]
    for training in (False, True):
        grids.append(ref.sigma(time_grid(name, 33, training)).numpy())
    if name == "iddpm":
        grids.append(U[:-1])
    return torch.tensor(np.concatenate(grids), dtype=F64)


def _tolerance(dtype):
    """One rounding to the latent's dtype plus a few ulp of the float32-or-wider computation.

    float16 stores c_in ~ 5e-5 (iDDPM at u_0) as a subnormal, spaced 2^-24 apart: that is the atol.
    """
    rtol = 16 * torch.finfo(compute_dtype(dtype)).eps + torch.finfo(dtype).eps
    return dict(rtol=rtol, atol=2.0**-24 if dtype == torch.float16 else 0.0)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_coefficients_match_table_1(name, dtype):
    precond, probe, _ = build(name)
    sigma = noise_levels(name)
    compute = compute_dtype(dtype)
    level = sigma.to(compute)
    c_in, c_noise, c_out, c_skip = measure(precond, probe, level, dtype)
    # the reference is evaluated at the noise level the preconditioner actually received
    e_in, e_noise, e_out, e_skip = REFS[name].coefficients(level.to(F64))
    tol = _tolerance(dtype)
    for got, want, what in ((c_in, e_in, "c_in"), (c_out, e_out, "c_out"), (c_skip, e_skip, "c_skip")):
        torch.testing.assert_close(got.to(F64), want, **tol, msg=lambda m, w=what: f"{name} {w}: {m}")
    assert c_noise.dtype == compute and c_noise.shape == (len(level),), "c_noise reaches the model in float32+"
    if name == "iddpm":
        assert torch.equal(c_noise.to(F64), e_noise)
    else:
        # c_noise stays in the compute dtype: a few ulp of it, and of |ln sigma| <= 10 where it crosses 0 (EDM, VE)
        eps = torch.finfo(compute).eps
        torch.testing.assert_close(c_noise.to(F64), e_noise, rtol=16 * eps, atol=16 * eps * 10)


@pytest.mark.parametrize("name", SCHEMES)
def test_forward_by_time_uses_sigma_of_t(name):
    """``forward(x, t)`` is ``forward_sigma(x, sigma(t))`` with the scheme's own sigma(t)."""
    precond, probe, _ = build(name)
    t = torch.cat([time_grid(name, 17), time_grid(name, 17, training=True)])
    by_time = measure(precond, probe, t, torch.float64, by_time=True)
    by_level = measure(precond, probe, REFS[name].sigma(t), torch.float64)
    for a, b in zip(by_time, by_level):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_vp_c_noise_is_m_minus_one_times_t():
    precond, probe, _ = build("vp")
    t = torch.cat([time_grid("vp", 33, training=True), torch.linspace(0.01, 1, 34, dtype=F64)])
    _, c_noise, _, _ = measure(precond, probe, t, torch.float64, by_time=True)
    torch.testing.assert_close(c_noise, (VP["M"] - 1) * t, rtol=1e-12, atol=0)


def test_iddpm_labels_above_256_stay_distinct_in_bfloat16():
    precond, probe, _ = build("iddpm")
    level = torch.tensor(U[:-1], dtype=torch.float32)
    _, c_noise, _, _ = measure(precond, probe, level, torch.bfloat16)
    assert c_noise.dtype == torch.float32
    assert torch.equal(c_noise, torch.arange(999, -1, -1, dtype=torch.float32))
    assert len(torch.unique(c_noise.to(torch.bfloat16))) < 1000  # what rounding to bfloat16 would have done


@pytest.mark.parametrize("name", SCHEMES)
def test_preconditioner_sigma_equals_schedule_noise_level(name):
    """The matched pair agrees on the noise level across sampling and training times, by name."""
    precond, _, schedule = build(name)
    t = torch.cat([time_grid(name, 65), time_grid(name, 65, training=True), schedule.timesteps(40)[:-1]])
    torch.testing.assert_close(precond.sigma(t), schedule.noise_level(t), rtol=1e-12, atol=0)
    drawn = schedule.sample_time(4096, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(precond.sigma(drawn), schedule.noise_level(drawn), rtol=4 * 2**-23, atol=0)


@pytest.mark.parametrize("name", SCHEMES)
def test_unit_variance_of_network_input_and_target(name):
    """Noised through the schedule and fed as the pipeline does, input and target have unit std.

    24 noise levels across the sampling range, n = 2^16 draws each, data = +-data_std (non-Gaussian).
    The sample std of n draws with kurtosis <= 3 has standard error <= 1/sqrt(2n) (delta method), so a
    6-standard-error band (0.0166) fails by chance with probability ~2e-9 per level.
    """
    precond, probe, schedule = build(name)
    ref = REFS[name]
    n, levels = 2**16, 24
    t = time_grid(name, levels)
    g = torch.Generator().manual_seed(0)
    x0 = ref.data_std * torch.sign(torch.randn(levels, n, generator=g, dtype=F64))
    noise = torch.randn(levels, n, generator=g, dtype=F64)
    z = schedule.add_noise(x0, t, noise=noise)
    alpha, _ = schedule.get_alpha_sigma(schedule.get_log_snr(t)[:, None])
    x_hat = z / alpha
    torch.testing.assert_close(x_hat, x0 + ref.sigma(t)[:, None] * noise, rtol=1e-10, atol=1e-10)
    level = schedule.noise_level(t)
    probe.out = 0.0
    d0 = precond.forward_sigma(x_hat, level)
    net_input = probe.x_in
    probe.out = 1.0
    c_out = precond.forward_sigma(x_hat, level) - d0
    target = (x0 - d0) / c_out
    band = 6 / math.sqrt(2 * n)
    torch.testing.assert_close(target.std(dim=1), torch.ones(levels, dtype=F64), rtol=0, atol=band)
    if ref.unit_input:
        torch.testing.assert_close(net_input.std(dim=1), torch.ones(levels, dtype=F64), rtol=0, atol=band)
    else:  # VE leaves the input unscaled: std sqrt(data_std^2 + sigma^2)
        want = torch.sqrt(ref.data_std**2 + ref.sigma(t) ** 2)
        torch.testing.assert_close(net_input.std(dim=1) / want, torch.ones(levels, dtype=F64), rtol=0, atol=band)


def test_vp_network_sees_the_scaled_latent_once():
    """The VP preconditioner gets the unscaled latent; its c_in turns it into exactly the schedule's scaled z."""
    precond, probe, schedule = build("vp")
    g = torch.Generator().manual_seed(2)
    t = time_grid("vp", 9)
    x0, noise = torch.randn(9, 4, generator=g, dtype=F64), torch.randn(9, 4, generator=g, dtype=F64)
    z = schedule.add_noise(x0, t, noise=noise)
    precond.forward_sigma(x0 + REFS["vp"].sigma(t)[:, None] * noise, schedule.noise_level(t))
    torch.testing.assert_close(probe.x_in, z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCHEMES)
def test_spec_round_trip(name):
    precond, _, _ = build(name)
    rebuilt = ds.create("preconditioner", precond.spec.model_dump(), model=Probe())
    assert type(rebuilt) is type(precond) and rebuilt.spec == precond.spec


@pytest.mark.parametrize("name", SCHEMES)
def test_zero_noise_level_is_a_clear_error(name):
    precond, _, _ = build(name)
    with pytest.raises(ds.DomainError, match="noise levels > 0"):
        precond.forward_sigma(torch.ones(2, 3), torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize(
    "config, match",
    [
        ({"name": "vp", "beta_d": -1.0}, "beta_d"),
        ({"name": "vp", "M": 0}, "M"),
        ({"name": "iddpm", "C_1": 0.0}, "C_1"),
        ({"name": "iddpm", "M": 1}, "M"),
        ({"name": "ve", "unknown": 1}, "unknown"),
    ],
)
def test_invalid_configs_are_rejected_by_field(config, match):
    with pytest.raises(ds.SchemeConfigError, match=match):
        ds.create("preconditioner", config, model=Probe())


def test_every_scheme_is_listed_from_its_own_distribution():
    listed = {(i.kind, i.name): i.distribution for i in ds.list_schemes()}
    for name in SCHEMES:
        for kind in ("preconditioner", "noise_schedule"):
            assert listed[(kind, name)] == f"diffusion-schemes-{name}"
    assert listed[("weighting", "sigmoid")] == "diffusion-schemes-sigmoid"
    assert listed[("weighting", "edm")] == "diffusion-schemes-edm"
    assert listed[("weighting", "snr")] == listed[("weighting", "likelihood_weighting")] == "diffusion-schemes"


@pytest.mark.parametrize(
    "cls_path, kwargs, field",
    [
        ("diffusion_schemes_vp:VPPreconditioner", {"beta_d": 0.0}, "beta_d"),
        ("diffusion_schemes_vp:VPPreconditioner", {"M": 2.5}, "M"),
        ("diffusion_schemes_iddpm:IDDPMPreconditioner", {"C_1": 2.0}, "C_1"),
        ("diffusion_schemes_iddpm:IDDPMPreconditioner", {"M": 2.5}, "M"),
        ("diffusion_schemes_edm:EDMPreconditioner", {"sigma_data": 0.0}, "sigma_data"),
    ],
)
def test_direct_construction_rejects_bad_parameters(cls_path, kwargs, field):
    # Built directly or by name, a bad parameter gives the same error: both validate through the spec.
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ds.SchemeConfigError, match=rf"  - {field}: ") as direct:
        cls(Probe(), **kwargs)
    with pytest.raises(ds.SchemeConfigError) as by_name:
        ds.create("preconditioner", {"name": cls.spec_class.scheme_name(), **kwargs}, model=Probe())
    assert str(direct.value) == str(by_name.value)
