"""The DDPM noise table and the map between noise levels and (fractional) timesteps.

A table of ``T`` betas gives ``alpha_bar_j = prod_{i <= j} (1 - beta_i)`` and the noise levels of the
unscaled latent ``sigma_j = sqrt((1 - alpha_bar_j) / alpha_bar_j)``, increasing in the timestep
``j = 0 .. T - 1`` (Ho et al. 2020, eq. 4; Karras et al. 2022, Table 1, "VP" and "iDDPM" columns).
The betas:

- ``linear``: ``beta_j`` evenly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, section 4);
- ``scaled_linear``: ``sqrt(beta_j)`` evenly from ``sqrt(beta_start)`` to ``sqrt(beta_end)`` (the
  latent diffusion models of Rombach et al. 2022, Stable Diffusion);
- ``squaredcos_cap_v2``: ``beta_j = min(1 - f((j + 1) / T) / f(j / T), 0.999)`` with
  ``f(u) = cos^2((u + 0.008) / 1.008 * pi / 2)`` (Nichol & Dhariwal 2021, eq. 17).

``rescale_betas_zero_snr`` shifts and scales ``sqrt(alpha_bar)`` so its last entry is 0 and its first
unchanged (Lin et al. 2024, Algorithm 1); the last ``alpha_bar`` then becomes ``2^-24`` so the top
noise level stays finite (``sigma = 4096``). ``precision="float64"`` (the default) evaluates these
formulas in double precision; with ``"float32"`` every step runs in float32 as diffusers runs it, so the
table equals diffusers' own bit for bit (what a diffusers model was trained on; :func:`from_diffusers`
sets it). They differ by up to 3e-4 relative in sigma, at the smallest noise levels.

Between entries the noise level is interpolated linearly in the timestep (``interpolation="linear"``,
what diffusers' Euler, Heun and DPM-Solver schedulers do to place their sigmas) or ``log sigma`` is
(``"log_sigma"``, how they map Karras sigmas back to timesteps). The two maps invert each other
exactly on the table points; outside the table's range a timestep is clamped to ``[0, T - 1]``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

__all__ = ["TableMixin", "alphas_cumprod_table"]

#: The last alpha_bar after a zero-terminal-SNR rescale (diffusers' value): sigma_max = 4096.
ZERO_SNR_ALPHA_BAR = 2.0**-24


def _cosine_betas(num: int) -> list[float]:
    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - f((j + 1) / num) / f(j / num), 0.999) for j in range(num)]


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: ``sqrt(alpha_bar)`` shifted to end at 0 and scaled to keep its start."""
    root = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


@functools.lru_cache(maxsize=16)
def _table(
    num: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas: tuple[float, ...] | None,
    alphas_cumprod: tuple[float, ...] | None, rescale: bool, precision: str,
) -> torch.Tensor:
    dtype = torch.float32 if precision == "float32" else torch.float64
    if alphas_cumprod is not None:
        given = torch.tensor(alphas_cumprod, dtype=dtype)
        if not rescale:
            return given.to(torch.float64)
        betas = 1 - torch.cat([given[:1], given[1:] / given[:-1]])
    elif trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=dtype)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num, dtype=dtype)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num, dtype=dtype) ** 2
    else:
        betas = torch.tensor(_cosine_betas(num), dtype=dtype)
    if rescale:
        betas = _rescale_zero_terminal_snr(betas)
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    if rescale:
        alpha_bar[-1] = ZERO_SNR_ALPHA_BAR
    return alpha_bar.to(torch.float64)


def alphas_cumprod_table(spec: Any) -> torch.Tensor:
    """``alpha_bar_0 .. alpha_bar_{T-1}`` (float64, a fresh tensor) for a spec holding the table fields.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("noise_schedule", {"name": "discrete", "precision": "float64"})
    >>> a = alphas_cumprod_table(spec)
    >>> a.shape, round(float(a[0]), 6), float(a[0]) == 1 - 1e-4
    (torch.Size([1000]), 0.9999, True)
    """
    return _table(
        spec.num_train_timesteps, spec.beta_start, spec.beta_end, spec.beta_schedule,
        None if spec.trained_betas is None else tuple(spec.trained_betas),
        None if spec.alphas_cumprod is None else tuple(spec.alphas_cumprod),
        spec.rescale_betas_zero_snr, spec.precision,
    ).clone()


class TableMixin:
    """The table of a ``discrete`` scheme and its timestep map; the class sets the table fields first.

    ``alphas_cumprod`` and ``table_sigmas`` are float64 on the CPU; the maps run on the device and
    dtype of their argument, with copies of the table kept per device and dtype.
    """

    def _init_table(self, spec: Any) -> None:
        self.alphas_cumprod = alphas_cumprod_table(spec)
        self.table_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self._copies: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table_on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._copies:
            sigmas = self.table_sigmas.to(device=like.device, dtype=like.dtype)
            self._copies[key] = (sigmas, sigmas.log())
        return self._copies[key]

    @staticmethod
    def _float(value: Any) -> torch.Tensor:
        value = torch.as_tensor(value)
        return value if value.is_floating_point() else value.to(torch.float64)

    def timestep(self, sigma: Any) -> torch.Tensor:
        """The fractional timestep of noise level ``sigma`` (exactly ``j`` at ``table_sigmas[j]``).

        >>> import diffusion_schemes as ds
        >>> schedule = ds.create("noise_schedule", "discrete")
        >>> float(schedule.timestep(schedule.table_sigmas[[0, 999]]).sum())
        999.0
        """
        sigma = self._float(sigma)
        table, log_table = self._table_on(sigma)
        if self.interpolation == "log_sigma":
            value, table = sigma.log(), log_table
        else:
            value = sigma
        high = torch.searchsorted(table, value.contiguous()).clamp(1, table.shape[0] - 1)
        low_value, high_value = table[high - 1], table[high]
        w = ((value - low_value) / (high_value - low_value)).clamp(0, 1)
        return (high - 1).to(sigma.dtype) + w

    def sigma_at_timestep(self, timestep: Any) -> torch.Tensor:
        """The noise level at a (fractional) timestep (exactly ``table_sigmas[j]`` at ``j``).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> schedule = ds.create("noise_schedule", {"name": "discrete", "interpolation": "log_sigma"})
        >>> s = schedule.sigma_at_timestep(torch.tensor([10.0, 10.5, 11.0], dtype=torch.float64))
        >>> bool(torch.isclose(s[1], (s[0] * s[2]).sqrt()))     # the geometric mean halfway
        True
        """
        t = self._float(timestep)
        table, _ = self._table_on(t)
        t = t.clamp(0, table.shape[0] - 1)
        low = t.floor().clamp(max=table.shape[0] - 2)
        w = t - low
        low = low.long()
        a, b = table[low], table[low + 1]
        if self.interpolation == "log_sigma":
            return torch.where(w == 1, b, a * (b / a) ** w)
        return (1 - w) * a + w * b
