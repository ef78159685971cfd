"""docs/config.md, "What your backbone sees": the c_noise and input ranges of each preconditioner.

Three things agree: the table on the page, the installed preconditioners evaluated over their own
schedules' noise levels, and closed forms written here from the papers' formulas and constants
(Karras et al. 2022, Table 1; Liu et al. 2023 for flow matching) in float64.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import diffusion_schemes as ds

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config.md"
SIGMA_DATA = 0.5  # the data's standard deviation the table assumes


def _vp_sigma(t, beta_d=19.9, beta_min=0.1):
    return math.sqrt(math.expm1(0.5 * beta_d * t**2 + beta_min * t))


def _iddpm_table(C_1=0.001, C_2=0.008, M=1000):
    """u_j, j = 0..M-1 (Karras et al. 2022, Table 1): u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(abar_{j-1} / abar_j, C_1) - 1)."""
    abar = [math.sin(0.5 * math.pi * j / (M * (C_2 + 1))) ** 2 for j in range(M + 1)]
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(abar[j - 1] / abar[j], C_1) - 1)
    return u[:M]


def _ddpm_linear_ends(T=1000, beta_start=1e-4, beta_end=0.02):
    """sigma_0 and sigma_{T-1} of the DDPM linear table (Ho et al. 2020): sigma^2 = (1 - alpha_bar) / alpha_bar."""
    betas = [beta_start + j * (beta_end - beta_start) / (T - 1) for j in range(T)]
    alpha_bar = math.prod(1 - b for b in betas)
    return math.sqrt(betas[0] / (1 - betas[0])), math.sqrt((1 - alpha_bar) / alpha_bar)


def _unit_ratio(sigma):  # std of c_in x for c_in = 1 / sqrt(1 + sigma^2)
    return math.sqrt((SIGMA_DATA**2 + sigma**2) / (1 + sigma**2))


def closed_forms() -> dict[str, dict[str, tuple[float, float]]]:
    """sigma, c_noise and std(c_in x) ranges per preconditioner, from the formulas alone."""
    edm_lo = math.exp(-1.2 - 4.5 * 1.2)  # training: ln sigma within 4.5 P_std of P_mean, below sampling's 0.002
    u = _iddpm_table()
    flow_t = (1e-3, 0.999)
    ddpm = _ddpm_linear_ends()
    flow_std = lambda t: math.sqrt((1 - t) ** 2 * SIGMA_DATA**2 + t**2)  # noqa: E731 - (1 - t) sqrt(sd^2 + sigma^2)
    t_star = SIGMA_DATA**2 / (1 + SIGMA_DATA**2)  # where flow_std is smallest
    return {
        "edm": {"sigma": (edm_lo, 80.0), "c_noise": (math.log(edm_lo) / 4, math.log(80.0) / 4), "std": (1.0, 1.0)},
        "discrete": {"sigma": ddpm, "c_noise": (0.0, 999.0), "std": (_unit_ratio(ddpm[0]), _unit_ratio(ddpm[1]))},
        "ve": {"sigma": (0.02, 100.0), "c_noise": (math.log(0.01), math.log(50.0)),
               "std": (math.hypot(SIGMA_DATA, 0.02), math.hypot(SIGMA_DATA, 100.0))},
        "vp": {"sigma": (_vp_sigma(1e-5), _vp_sigma(1.0)), "c_noise": (999 * 1e-5, 999.0),
               "std": (_unit_ratio(_vp_sigma(1e-5)), _unit_ratio(_vp_sigma(1.0)))},
        "iddpm": {"sigma": (u[-1], u[0]), "c_noise": (0.0, 999.0), "std": (_unit_ratio(u[-1]), _unit_ratio(u[0]))},
        "flow_matching": {"sigma": (flow_t[0] / (1 - flow_t[0]), flow_t[1] / (1 - flow_t[1])), "c_noise": flow_t,
                          "std": (flow_std(t_star), max(flow_std(flow_t[0]), flow_std(flow_t[1])))},
    }


def measured(name: str, points: int = 20001) -> dict[str, tuple[float, float]]:
    """The installed preconditioner over its own schedule's sampling and training noise levels."""
    schedule = ds.create("noise_schedule", name)
    precond = ds.create("preconditioner", name, model=torch.nn.Identity())
    lows, highs = zip(*(schedule.domain(training) for training in (False, True)))
    ends = schedule.noise_level(torch.tensor([min(lows), max(highs)], dtype=torch.float64))
    grid = torch.logspace(math.log10(ends[0]), math.log10(ends[1]), points, dtype=torch.float64)
    sigma = torch.cat([ends, grid]).reshape(-1, 1)
    c_in, c_noise, _, _ = precond.compute_coefficients(sigma)
    std = c_in * (SIGMA_DATA**2 + sigma**2).sqrt()
    span = lambda v: (float(v.min()), float(v.max()))  # noqa: E731
    return {"sigma": span(sigma), "c_noise": span(c_noise), "std": span(std)}


def table() -> dict[str, dict[str, tuple[float, float]]]:
    section = PAGE.read_text().split("## What your backbone sees", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.fullmatch(r"[a-z_]+", cells[0]) or cells[0] == "preconditioner":
            continue
        pair = lambda cell: tuple(float(x) for x in cell.split(" .. "))  # noqa: E731
        rows[cells[0]] = {"sigma": pair(cells[1]), "c_noise": pair(cells[3]), "std": pair(cells[4])}
    return rows


def _close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= max(rel * abs(b), abs_)


def matched_preconditioners() -> list[str]:
    return [n for n in ds.registry.names("preconditioner") if n in ds.registry.names("noise_schedule")]


def test_every_installed_preconditioner_with_a_schedule_has_a_row_and_a_closed_form():
    assert set(matched_preconditioners()) == set(table()) == set(closed_forms())


@pytest.mark.parametrize("name", sorted(closed_forms()))
def test_the_installed_preconditioner_matches_the_formulas(name):
    got, want = measured(name), closed_forms()[name]
    for what in ("sigma", "c_noise", "std"):
        for g, w in zip(got[what], want[what]):
            # the ends are evaluated exactly; an interior minimum (flow matching's std) on a log grid of
            # spacing h = ln(1e6) / 20000 is off by O(h^2) ~ 5e-7 relative
            assert _close(g, w, rel=1e-6, abs_=1e-12), f"{name} {what}: installed gives {got[what]}, formula {want[what]}"


@pytest.mark.parametrize("name", sorted(closed_forms()))
def test_the_page_prints_the_formulas_to_four_significant_digits(name):
    printed, want = table()[name], closed_forms()[name]
    for what in ("sigma", "c_noise", "std"):
        for p, w in zip(printed[what], want[what]):
            assert _close(p, w, rel=5e-4, abs_=1e-12) or f"{w:.4g}" == f"{p:.4g}", f"{name} {what}: page {printed[what]}, formula {want[what]}"
