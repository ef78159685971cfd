"""Independent float64 statements of the four built-in schemes (Karras et al. 2022, Table 1).

Written from the papers, not from the library: the tests compare the library against these.
Every function takes and returns float64 torch tensors so autograd can differentiate them.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
from typing import Callable

import numpy as np
import torch

F64 = torch.float64
SCHEMES = ("edm", "ve", "vp", "iddpm")

# Table 1 constants.
EDM = dict(sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_data=0.5, P_mean=-1.2, P_std=1.2)
VE = dict(sigma_min=0.02, sigma_max=100.0)
VP = dict(beta_d=19.9, beta_min=0.1, eps_t=1e-5, eps_s=1e-3, M=1000)
IDDPM = dict(C_1=0.001, C_2=0.008, M=1000, j0=8)


def iddpm_table(C_1: float = IDDPM["C_1"], C_2: float = IDDPM["C_2"], M: int = IDDPM["M"]) -> np.ndarray:
    """u_0 ... u_M of Karras et al. 2022, Table 1 (numpy float64)."""
    j = np.arange(M + 1, dtype=np.float64)
    abar = np.sin(np.pi / 2 * j / (M * (C_2 + 1))) ** 2
    u = np.zeros(M + 1)
    for k in range(M, 0, -1):
        u[k - 1] = np.sqrt((u[k] ** 2 + 1) / max(abar[k - 1] / abar[k], C_1) - 1)
    return u


U = iddpm_table()


def _phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def vp_sigma(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.expm1(VP["beta_d"] * t**2 / 2 + VP["beta_min"] * t))  # exp(.) - 1, without cancellation


def vp_time(sigma: torch.Tensor) -> torch.Tensor:
    """The textbook root of beta_d t^2 / 2 + beta_min t = log(1 + sigma^2), in 40-digit decimal arithmetic.

    (In float64 the textbook form loses digits to cancellation for small sigma; exact arithmetic does not.)
    """
    bd, bm = decimal.Decimal(str(VP["beta_d"])), decimal.Decimal(str(VP["beta_min"]))

    def root(s: float) -> float:
        with decimal.localcontext(decimal.Context(prec=40)):
            L = (1 + decimal.Decimal(s) ** 2).ln()
            return float(((bm**2 + 2 * bd * L).sqrt() - bm) / bd)

    flat = [root(s) for s in sigma.detach().to(F64).reshape(-1).tolist()]
    return torch.tensor(flat, dtype=F64).reshape(sigma.shape)


@dataclasses.dataclass
class Ref:
    name: str
    sigma: Callable[[torch.Tensor], torch.Tensor]  # noise level sigma(t) = sigma_f / alpha
    alpha: Callable[[torch.Tensor], torch.Tensor]  # forward-process scale
    sampling: tuple[float, float]  # time domain
    training: tuple[float, float]
    timesteps: Callable[[int], np.ndarray]  # N times (without the final 0)
    train_cdf: Callable[[np.ndarray], np.ndarray] | None  # CDF of the training times (continuous)
    coefficients: Callable[[torch.Tensor], tuple]  # (c_in, c_noise, c_out, c_skip) of the noise level
    data_std: float  # data std for which the scheme is designed
    unit_input: bool  # whether c_in x has unit std

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return -2 * torch.log(self.sigma(t))

    def forward_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha(t) * self.sigma(t)


def _ramp(n: int) -> np.ndarray:
    i = np.arange(n) / max(n - 1, 1)
    a, b, rho = EDM["sigma_max"] ** (1 / EDM["rho"]), EDM["sigma_min"] ** (1 / EDM["rho"]), EDM["rho"]
    return (a + i * (b - a)) ** rho


def _edm_coefficients(s):
    sd = EDM["sigma_data"]
    return 1 / torch.sqrt(s**2 + sd**2), torch.log(s) / 4, s * sd / torch.sqrt(s**2 + sd**2), sd**2 / (s**2 + sd**2)


def _ve_coefficients(s):
    return torch.ones_like(s), torch.log(s / 2), s, torch.ones_like(s)


def _vp_coefficients(s):
    return 1 / torch.sqrt(s**2 + 1), (VP["M"] - 1) * vp_time(s), -s, torch.ones_like(s)


def _iddpm_coefficients(s):
    j = np.abs(s.detach().numpy().reshape(-1, 1) - U.reshape(1, -1)).argmin(axis=1)
    c_noise = torch.tensor(IDDPM["M"] - 1 - j, dtype=F64).reshape(s.shape)
    return 1 / torch.sqrt(s**2 + 1), c_noise, -s, torch.ones_like(s)


def _iddpm_steps(n: int) -> np.ndarray:
    M, j0 = IDDPM["M"], IDDPM["j0"]
    i = np.arange(n) / max(n - 1, 1)
    return U[np.floor(j0 + (M - 1 - j0) * i + 0.5).astype(int)]


_identity = lambda t: t  # noqa: E731
_one = lambda t: torch.ones_like(t)  # noqa: E731
_lo, _hi = math.log(VE["sigma_min"]), math.log(VE["sigma_max"])

REFS = {
    "edm": Ref(
        "edm", _identity, _one,
        sampling=(EDM["sigma_min"], EDM["sigma_max"]),
        training=(math.exp(EDM["P_mean"] - 4.5 * EDM["P_std"]), math.exp(EDM["P_mean"] + 4.5 * EDM["P_std"])),
        timesteps=_ramp,
        train_cdf=lambda s: _phi((np.log(s) - EDM["P_mean"]) / EDM["P_std"]),
        coefficients=_edm_coefficients, data_std=EDM["sigma_data"], unit_input=True,
    ),
    "ve": Ref(
        "ve", _identity, _one,
        sampling=(VE["sigma_min"], VE["sigma_max"]), training=(VE["sigma_min"], VE["sigma_max"]),
        timesteps=lambda n: VE["sigma_max"] * (VE["sigma_min"] / VE["sigma_max"]) ** (np.arange(n) / max(n - 1, 1)),
        train_cdf=lambda s: np.clip((np.log(s) - _lo) / (_hi - _lo), 0, 1),
        coefficients=_ve_coefficients, data_std=1.0, unit_input=False,
    ),
    "vp": Ref(
        "vp", vp_sigma, lambda t: 1 / torch.sqrt(1 + vp_sigma(t) ** 2),
        sampling=(VP["eps_s"], 1.0), training=(VP["eps_t"], 1.0),
        timesteps=lambda n: 1 + np.arange(n) / max(n - 1, 1) * (VP["eps_s"] - 1),
        train_cdf=lambda t: np.clip((t - VP["eps_t"]) / (1 - VP["eps_t"]), 0, 1),
        coefficients=_vp_coefficients, data_std=1.0, unit_input=True,
    ),
    "iddpm": Ref(
        "iddpm", _identity, _one,
        sampling=(U[IDDPM["M"] - 1], U[0]), training=(U[IDDPM["M"] - 1], U[0]),
        timesteps=_iddpm_steps, train_cdf=None,
        coefficients=_iddpm_coefficients, data_std=1.0, unit_input=True,
    ),
}


def time_grid(name: str, n: int, training: bool = False) -> torch.Tensor:
    """``n`` float64 times spread over a scheme's domain (geometric, ends included)."""
    lo, hi = REFS[name].training if training else REFS[name].sampling
    return torch.tensor(np.geomspace(lo, hi, n), dtype=F64)


def dkw_bound(n: int, p_false: float = 1e-6) -> float:
    """Dvoretzky-Kiefer-Wolfowitz (Massart constant): P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) = p_false."""
    return math.sqrt(math.log(2 / p_false) / (2 * n))


def ks_statistic(samples: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    x = np.sort(samples.astype(np.float64))
    f = cdf(x)
    n = len(x)
    i = np.arange(1, n + 1)
    return float(max((i / n - f).max(), (f - (i - 1) / n).max()))
