"""The shifted, clipped cosine schedule (Kingma & Gao 2023, appendix D.1; Nichol & Dhariwal 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch

import diffusion_schemes as ds

from . import CosineNoiseScheduleSpec


class CosineNoiseSchedule(ds.UniformTimeSchedule):
    """Variance preserving, ``lambda(t) = -2 log tan(pi t / 2) + 2 shift`` for ``t`` in ``[t_min, t_max]``.

    The cosine schedule ``alpha^2 = cos^2(pi t / 2)`` has ``lambda = -2 log tan(pi t / 2)``
    (Kingma & Gao 2023, eq. 41); the shift moves it by ``2 shift``. Its inverse is
    ``t(lambda) = (2 / pi) atan(exp(shift - lambda / 2))``; lambda is clipped to
    ``[log_snr_min, log_snr_max]`` by restricting t to ``[t(log_snr_max), t(log_snr_min)]``,
    where both sampling (N even steps from ``t_max`` to ``t_min``, then 0) and training
    (uniform t) happen. ``d lambda / dt = -2 pi / sin(pi t)``. The default weighting is the
    core's ``snr`` (uniform on the epsilon-loss); Kingma & Gao 2023 pair this schedule with
    ``weighting="sigmoid"`` (the ``diffusion-schemes-sigmoid`` distribution).

    >>> from diffusion_schemes_cosine import CosineNoiseSchedule
    >>> s = CosineNoiseSchedule()
    >>> round(float(s.get_log_snr(0.5)), 12)              # tan(pi/4) = 1
    0.0
    >>> [round(v, 6) for v in s.get_log_snr(torch.tensor(s.domain())).tolist()]
    [15.0, -15.0]
    """

    spec_class = CosineNoiseScheduleSpec
    t_limits = (0.0, 1.0)
    variance_type = "preserving"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t_min = self._time(self.log_snr_max)
        self.t_max = self._time(self.log_snr_min)

    def _time(self, log_snr: float) -> float:
        return 2 / math.pi * math.atan(math.exp(self.shift - log_snr / 2))

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        t = self._t(t, training)
        return -2 * torch.tan(math.pi * t / 2).log() + 2 * self.shift

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        log_snr = self._log_snr(log_snr)
        return 2 / math.pi * torch.atan(torch.exp(self.shift - log_snr / 2))

    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        return -2 * math.pi / torch.sin(math.pi * self._t(t, training))

    def domain(self, training: bool = False) -> tuple[float, float]:
        return self.t_min, self.t_max
