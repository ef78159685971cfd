"""The iDDPM noise levels ``u_0 > u_1 > ... > u_M = 0``, shared by the preconditioner and the schedule."""

from __future__ import annotations

import functools
import math

import torch

from diffusion_schemes.errors import InvalidArgumentError


@functools.lru_cache(maxsize=8)
def _table(C_1: float, C_2: float, M: int) -> tuple[float, ...]:
    def alpha_bar(j: int) -> float:
        return math.sin(0.5 * math.pi * j / (M * (C_2 + 1))) ** 2

    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return tuple(u)


def noise_level_table(C_1: float = 0.001, C_2: float = 0.008, M: int = 1000) -> torch.Tensor:
    """The ``M + 1`` iDDPM noise levels, decreasing, in float64 (Karras et al. 2022, Table 1).

    ``u_M = 0`` and ``u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1) / alpha_bar(j), C_1) - 1)``
    with the cosine schedule ``alpha_bar(j) = sin^2(pi/2 * j / (M (C_2 + 1)))`` of Nichol &
    Dhariwal 2021 (eq. 17), written in the reverse index of Karras et al. Computed once per
    ``(C_1, C_2, M)`` in double precision; a fresh tensor is returned on each call.

    >>> from diffusion_schemes_iddpm import noise_level_table
    >>> u = noise_level_table()
    >>> u.shape, u.dtype
    (torch.Size([1001]), torch.float64)
    >>> round(float(u[999]), 5), round(float(u[0])), float(u[1000])
    (0.00643, 20291, 0.0)
    """
    if not (0 < C_1 <= 1 and C_2 >= 0):
        raise InvalidArgumentError(f"iDDPM needs 0 < C_1 <= 1 and C_2 >= 0, got C_1={C_1}, C_2={C_2}")
    if int(M) != M or M < 2:
        raise InvalidArgumentError(f"iDDPM needs an integer number of steps M >= 2, got M={M!r}")
    return torch.tensor(_table(float(C_1), float(C_2), int(M)), dtype=torch.float64)
