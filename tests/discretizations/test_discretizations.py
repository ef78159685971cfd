"""The ``discretization`` kind: grids against k-diffusion and float64 closed forms, specs, registry, conformance."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes import conformance
from diffusion_schemes.discretizations import BaseDiscretization
from diffusion_schemes.cli.commands import main as cli
from benchmarks.kdiffusion_oracle import load_sampling

BUILT_IN = ("schedule", "karras", "log_snr_uniform", "polyexponential", "linear_time")
STEPS = (1, 2, 5, 18, 50)


class float64_default:
    """Run k-diffusion's grids in float64 (they build on ``torch.linspace`` of the default dtype)."""

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)


def grid(name: str, n: int, schedule: Any = None, **fields: Any) -> torch.Tensor:
    return ds.create("discretization", {"name": name, **fields}).sigmas(n, schedule)


# ---------------------------------------------------------------------- against k-diffusion


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize(("sigma_min", "sigma_max", "rho"), [(0.002, 80.0, 7.0), (0.03, 14.6, 3.0), (1e-3, 1e3, 1.0)])
def test_karras_is_k_diffusion_karras(n, sigma_min, sigma_max, rho):
    K = load_sampling()
    with float64_default():
        want = K.get_sigmas_karras(n, sigma_min, sigma_max, rho=rho)
    got = grid("karras", n, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize(("sigma_min", "sigma_max"), [(0.002, 80.0), (0.0292, 14.6)])
def test_log_snr_uniform_is_k_diffusion_exponential(n, sigma_min, sigma_max):
    K = load_sampling()
    with float64_default():
        want = K.get_sigmas_exponential(n, sigma_min, sigma_max)
    got = grid("log_snr_uniform", n, sigma_min=sigma_min, sigma_max=sigma_max)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("rho", [1.0, 0.5, 2.5])
def test_polyexponential_is_k_diffusion_polyexponential(n, rho):
    K = load_sampling()
    with float64_default():
        want = K.get_sigmas_polyexponential(n, 0.002, 80.0, rho=rho)
    got = grid("polyexponential", n, sigma_min=0.002, sigma_max=80.0, rho=rho)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_linear_time_on_vp_is_k_diffusion_vp_grid():
    """VP's time is linear on [eps_s, 1] (Song et al. 2021): k-diffusion's get_sigmas_vp."""
    K = load_sampling()
    with float64_default():
        want = K.get_sigmas_vp(12, beta_d=19.9, beta_min=0.1, eps_s=1e-3)
    torch.testing.assert_close(grid("linear_time", 12, ds.create("noise_schedule", "vp")), want, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- against closed forms


def karras_closed_form(n: int, lo: float, hi: float, rho: float) -> list[float]:
    """Karras et al. 2022, eq. 5, one value at a time in Python floats."""
    a, b = hi ** (1 / rho), lo ** (1 / rho)
    return [(a + i / max(n - 1, 1) * (b - a)) ** rho for i in range(n)] + [0.0]


@pytest.mark.parametrize("n", STEPS)
def test_grids_against_float64_closed_forms(n):
    lo, hi = 0.002, 80.0
    got = grid("karras", n, sigma_min=lo, sigma_max=hi)
    assert got.tolist() == pytest.approx(karras_closed_form(n, lo, hi, 7.0), rel=1e-13)
    geometric = [hi * (lo / hi) ** (i / max(n - 1, 1)) for i in range(n)] + [0.0]
    assert grid("log_snr_uniform", n, sigma_min=lo, sigma_max=hi).tolist() == pytest.approx(geometric, rel=1e-13)
    # polyexponential with rho = 1 is the same geometric grid; rho = 2 bends it: log sigma = log lo + (1-u)^2 log(hi/lo)
    assert grid("polyexponential", n, sigma_min=lo, sigma_max=hi).tolist() == pytest.approx(geometric, rel=1e-13)
    bent = [math.exp(math.log(lo) + (1 - i / max(n - 1, 1)) ** 2 * math.log(hi / lo)) for i in range(n)] + [0.0]
    assert grid("polyexponential", n, sigma_min=lo, sigma_max=hi, rho=2.0).tolist() == pytest.approx(bent, rel=1e-13)


def test_log_snr_uniform_is_uniform_in_log_snr():
    vp = ds.create("noise_schedule", "vp")
    levels = grid("log_snr_uniform", 9, vp)[:-1]
    lam = vp.get_log_snr(vp.get_t_from_log_snr(-2 * levels.log()))  # through the schedule and back
    steps = lam[1:] - lam[:-1]
    torch.testing.assert_close(steps, steps[:1].expand_as(steps), rtol=1e-9, atol=0)


@pytest.mark.parametrize("schedule", ["edm", "ve", "vp", "iddpm"])
def test_ranges_default_to_the_schedule_sampling_domain(schedule):
    """Without sigma_min/sigma_max a grid spans noise_level at both ends of schedule.domain()."""
    sched = ds.create("noise_schedule", schedule)
    t_min, t_max = sched.domain()
    top, bottom = (float(sched.noise_level(torch.tensor(t, dtype=torch.float64))) for t in (t_max, t_min))
    for name in ("karras", "log_snr_uniform", "polyexponential", "linear_time"):
        levels = grid(name, 7, sched)
        assert float(levels[0]) == pytest.approx(top, rel=1e-12), name
        assert float(levels[-2]) == pytest.approx(bottom, rel=1e-12), name


def test_builtin_grids_reproduce_the_schedules_own():
    """karras on EDM, log_snr_uniform on VE and linear_time on VP are those schedules' own steps."""
    for schedule, name in (("edm", "karras"), ("ve", "log_snr_uniform"), ("vp", "linear_time")):
        sched = ds.create("noise_schedule", schedule)
        for n in STEPS:
            torch.testing.assert_close(grid(name, n, sched), sched.sigmas(n), rtol=1e-12, atol=0)


@pytest.mark.parametrize("schedule", ["edm", "ve", "vp", "iddpm", "cosine"])
def test_schedule_discretization_is_todays_grid(schedule):
    sched = ds.create("noise_schedule", schedule)
    for n in STEPS:
        assert torch.equal(grid("schedule", n, sched), sched.sigmas(n))


def test_sigma_at_is_the_map_the_grid_samples():
    edm = ds.create("noise_schedule", "edm")
    karras = ds.create("discretization", "karras")
    at = karras.sigma_at(torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64), edm)
    five = karras_closed_form(5, 0.002, 80.0, 7.0)  # u = 0, 1/4, 1/2, 3/4, 1
    assert at.tolist() == pytest.approx([five[0], five[1], five[4]], rel=1e-13)


# ---------------------------------------------------------------------- specs, errors, registry


def test_spec_errors_are_clear():
    with pytest.raises(ds.SchemeConfigError, match="sigma_min .* must be below sigma_max"):
        ds.create("discretization", {"name": "karras", "sigma_min": 10, "sigma_max": 1})
    with pytest.raises(ds.SchemeConfigError, match="rho: Input should be greater than 0"):
        ds.create("discretization", {"name": "polyexponential", "rho": 0})
    with pytest.raises(ds.UnknownSchemeError, match="Did you mean 'karras'"):
        ds.create("discretization", "karas")
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        ds.create("discretization", "karras").sigmas(0, ds.create("noise_schedule", "edm"))
    from diffusion_schemes.discretizations import KarrasDiscretization

    with pytest.raises(ds.SchemeConfigError, match="rho: Input should be greater than 0"):  # built directly: same check
        KarrasDiscretization(rho=-1)
    assert KarrasDiscretization(rho=5).spec == ds.parse_spec("discretization", {"name": "karras", "rho": 5})
    with pytest.raises(ValueError, match="sigma_min=100, sigma_max=80"):  # one field set, one from the schedule
        ds.create("discretization", {"name": "karras", "sigma_min": 100}).sigmas(3, ds.create("noise_schedule", "edm"))


def test_registered_listed_and_in_the_schema():
    infos = {i.name: i for i in ds.list_schemes("discretization")}
    assert set(BUILT_IN) <= set(infos)
    assert all(infos[n].distribution == "diffusion-schemes" and infos[n].summary for n in BUILT_IN)
    assert set(BUILT_IN) <= set(ds.json_schema("discretization")["anyOf"][-1]["discriminator"]["mapping"])
    from pydantic import BaseModel

    class SamplerConfig(BaseModel):
        discretization: ds.spec_type("discretization") = "schedule"

    assert SamplerConfig().discretization.name == "schedule"
    spec = SamplerConfig(discretization={"name": "karras", "rho": 5}).discretization
    assert isinstance(spec, ds.DiscretizationSpec) and spec.rho == 5.0
    built = spec.build()
    assert isinstance(built, BaseDiscretization) and built.spec == spec


def test_cli_lists_shows_and_prints_the_schema(capsys):
    assert cli(["list", "--kind", "discretization"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BUILT_IN)
    assert cli(["show", "discretization", "karras"]) == 0
    out = capsys.readouterr().out
    assert "rho" in out and "7.0" in out and "sigma_min" in out
    assert cli(["schema", "discretization"]) == 0
    assert "karras" in json.loads(capsys.readouterr().out)["anyOf"][-1]["discriminator"]["mapping"]


# ---------------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("schedule", [None, "edm", "ve", "vp", "iddpm", "cosine", "flow_matching"])
def test_builtin_discretizations_conform(name, schedule):
    options = {} if schedule is None else {"schedule": schedule}
    report = conformance.check("discretization", name, **options)
    assert set(report.passed) == set(conformance.CHECKS["discretization"])


def _geometric(u: Any, lo: float = 1e-3, hi: float = 1e3) -> torch.Tensor:
    return hi * (lo / hi) ** torch.as_tensor(u, dtype=torch.float64)


class _Planted(BaseDiscretization):
    """A geometric grid over the reference schedule's range with one defect planted by a subclass."""

    def sigma_at(self, u, schedule):
        return _geometric(u)


class NoFinalZero(_Planted):
    def sigmas(self, num_steps, schedule):
        levels = self.sigma_at(torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1), schedule)
        return torch.cat([levels, levels[-1:] * 1e-3])


class MissingZero(_Planted):
    def sigmas(self, num_steps, schedule):
        return super().sigmas(num_steps, schedule)[:-1]


class RepeatsALevel(_Planted):
    def sigma_at(self, u, schedule):  # flat from u = 1/2 on: monotone, but the grid repeats a level
        return _geometric(torch.as_tensor(u, dtype=torch.float64).clamp(max=0.5))


class OutsideTheDomain(_Planted):
    def sigma_at(self, u, schedule):
        return _geometric(u, hi=2e3)


class OffByOne(_Planted):
    def sigmas(self, num_steps, schedule):
        levels = self.sigma_at(torch.arange(num_steps, dtype=torch.float64) / num_steps, schedule)
        return torch.cat([levels, levels.new_zeros(1)])


class BumpInTheMap(_Planted):
    def sigma_at(self, u, schedule):
        u = torch.as_tensor(u, dtype=torch.float64)
        return _geometric(u) * (1 + 5 * torch.exp(-(((u - 0.503) / 0.002) ** 2)))


@pytest.mark.parametrize(
    ("defect", "caught_by"),
    [
        (NoFinalZero, "ends_at_zero"),
        (MissingZero, "grid_shape"),
        (RepeatsALevel, "decreasing"),
        (OutsideTheDomain, "within_domain"),
        (OffByOne, "map_agrees_with_grid"),
        (BumpInTheMap, "map_monotone"),
    ],
)
def test_each_invariant_catches_its_planted_defect(defect, caught_by):
    class PlantedSpec(ds.DiscretizationSpec):
        """A discretization with a planted defect."""

        name: Literal["planted"] = "planted"

        def build(self):
            return defect()

    defect.spec_class = PlantedSpec
    with ds.registry.registered(PlantedSpec):
        report = conformance.check("discretization", "planted", raise_on_failure=False)
        with pytest.raises(conformance.ConformanceError, match=caught_by):
            conformance.check("discretization", "planted")
    failed = {f.invariant: f.message for f in report.failures}
    assert caught_by in failed, (defect.__name__, failed)
    if defect is not MissingZero:  # a grid one value short also fails the checks that index it
        assert set(failed) == {caught_by}, failed


def test_the_clean_planted_base_conforms():
    """The defects above are the only thing wrong with them: their common base passes every invariant."""

    class CleanSpec(ds.DiscretizationSpec):
        """A clean geometric grid."""

        name: Literal["clean"] = "clean"

        def build(self):
            return _Planted()

    _Planted.spec_class = CleanSpec
    try:
        with ds.registry.registered(CleanSpec):
            assert conformance.check("discretization", "clean").ok
    finally:
        del _Planted.spec_class
