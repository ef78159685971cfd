"""Multistep solvers: one evaluation a step, the earlier estimates reused to raise the order.

Each keeps the previous denoised estimates (or slopes) in its state. With ``lower_order_final``
(diffusers' name; off by default, which keeps k-diffusion's samples) a step falls back to first
order on the step to 0 and wherever the step grows, i.e. the previous step is shorter than the
current one in the solver's step variable (``r = h_{i-1} / h_i < 1``, by more than rounding):
there the earlier estimates are extrapolated beyond the interval they span. VP's uniform-in-t
steps grow towards the end (``r`` falls to about 0.3 on the last step), and with the option
``dpmpp_2m`` there is no worse than Euler; on EDM's rho = 7 ramp every step grows in
``log sigma``, so the option makes it first order: use it for grids like VP's only (measured in
docs/schemes/solvers.md). Which steps drop is decided once per call from the grid, in
:meth:`_Multistep.start`, so a step compiles with ``torch.compile(fullgraph=True)``.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> x0_predictor = lambda x, t: torch.full_like(x, 0.25)      # a dataset holding one point
>>> latents = schedule.init_latents((3, 2), generator=torch.Generator().manual_seed(0))
>>> for name in ("dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "lms", "unipc"):
...     result = ds.sample(x0_predictor, latents, schedule, 6, solver=name, generator=torch.Generator().manual_seed(1))
...     print(name, result.nfe, bool(torch.allclose(result.samples, torch.full_like(latents, 0.25), atol=1e-5)))
dpmpp_2m 6 True
dpmpp_2m_sde 6 True
dpmpp_3m_sde 6 True
lms 10 True
unipc 6 True
"""

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field

from diffusion_schemes.solvers.base import BaseSolver, to_d
from diffusion_schemes.tensors import cast
from diffusion_schemes.specs.base import SolverSpec

__all__ = ["LMS", "DPMpp2M", "DPMpp2MSDE", "DPMpp3MSDE", "UniPC"]

#: ``lower_order_final`` takes first order where the previous step is shorter than this fraction of the
#: current one (a step grows); the margin keeps equal steps (a log-uniform grid) higher order whatever the rounding.
MIN_STEP_RATIO = 1.0 - 1e-4


class _MultistepSpec(SolverSpec):
    lower_order_final: bool = Field(
        False, description="First order on the step to 0 and wherever the step grows (for grids like VP's)."
    )


class _SDESpec(_MultistepSpec):
    eta: float = Field(1.0, ge=0, description="Scale of the stochasticity: 0 is the ODE solver.")
    s_noise: float = Field(1.0, gt=0, description="Multiplier of the noise drawn.")


class _Multistep(BaseSolver):
    """The state is a dict: ``history``, the earlier estimates (newest last), and with
    ``lower_order_final`` the plan of the run, ``high`` (per step: whether it keeps the higher
    order), with ``i``, the index of the next step (a tensor, so one compiled step serves every step).

    The plan is decided once per call from the grid in :meth:`start` (``sigmas`` is known before
    the first step), so the step has no Python branch on tensor values: it computes both orders'
    updates and selects with ``torch.where``.
    """

    #: How many earlier steps ``lower_order_final`` compares with the current one.
    lookback: ClassVar[int] = 1
    levels_from_grid = True

    def start(self, sigmas):
        return {"history": [], **self.plan(sigmas)}

    def step_sizes(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The steps ``h_i`` in the solver's variable, here ``log(sigma_i / sigma_{i+1})`` (inf on the step to 0)."""
        return (sigmas[:-1] / sigmas[1:]).log()

    def plan(self, sigmas: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """``{"high": None}`` without ``lower_order_final``; else which steps keep the higher order.

        Step ``i`` drops to first order when it is the last or when one of the ``lookback``
        previous steps is shorter (``h_{i-k} / h_i < MIN_STEP_RATIO``). Tensor operations on the
        grid's device: no value is read on the host.
        """
        if not self.lower_order_final:
            return {"high": None}
        h = self.step_sizes(sigmas)
        low = torch.zeros(h.shape, dtype=torch.bool, device=h.device)
        for k in range(1, self.lookback + 1):
            low[k:] |= h[:-k] / h[k:] < MIN_STEP_RATIO
        low[-1] = True
        return {"high": ~low, "i": torch.zeros(1, dtype=torch.long, device=h.device)}

    @staticmethod
    def advance(state: dict) -> tuple[torch.Tensor | None, dict]:
        """This step's entry of the plan (None without one) and the state pointing at the next step."""
        if state["high"] is None:
            return None, state
        # index_select: indexing by a tensor's value would make the graph depend on it
        return state["high"].index_select(0, state["i"])[0], {**state, "i": state["i"] + 1}

    @staticmethod
    def select(high: torch.Tensor | None, higher: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``higher`` where the plan keeps the higher order (always without a plan), else ``first``."""
        return higher if high is None else torch.where(high, higher, first)

    def by_plan(self, high: torch.Tensor | None, history: list, update: Callable[[list], torch.Tensor]) -> torch.Tensor:
        """``update(history)``, or ``update(history[-1:])`` (first order) where the plan says so."""
        higher = update(history)
        if high is None or len(history) == 1:
            return higher
        return self.select(high, higher, update(history[-1:]))


class _SDEMultistep(_Multistep):
    """Exponential-integrator multistep with noise, in ``lambda = -log sigma``; ``a = (1 + eta) h``.

    A step is ``x <- e^{-a} x + (1 - e^{-a}) D_i + sum_k c_k diff_k`` (``e^{-a} = (sigma_{i+1} / sigma_i)
    e^{-eta h}``, the correction's differences of estimates ``diff_k`` from :meth:`differences`), then
    ``+ s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps`` on every step but the last, which returns ``D``.

    The scalars of every step (``e^{-a}``, the noise's scale and the correction's ``c_k``) are computed once
    per grid, in :meth:`start` (:meth:`scalars`), batched over the steps, on the grid's device and
    differentiably; each step takes its row by a tensor index (``row``), so it reads nothing on the host and
    one compiled step serves every step. The history keeps the ``order - 1`` last estimates.
    """

    stochastic = True

    def adds_noise(self, last):
        return not last and self.eta != 0

    def start(self, sigmas):
        return {**super().start(sigmas), "scalars": self.scalars(sigmas),
                "row": torch.zeros(1, dtype=torch.long, device=sigmas.device)}

    def scalars(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Row ``i`` for every step: ``[e^{-a}, s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}), c_1, ..., c_{order-1}]``,
        the ``c_k`` those of the ``min(order - 1, i)`` differences step ``i`` has (0 past them). The step to 0
        returns ``D`` and uses no row (:func:`_levels_after`)."""
        h = (sigmas[:-1] / _levels_after(sigmas)).log()
        a = (1 + self.eta) * h
        # without noise, no scale: its square root at 0 would give the grid a NaN gradient through the unused column
        noise = torch.zeros_like(h)
        if self.eta:
            noise = sigmas[1:] * (-torch.expm1(-2 * self.eta * h)).sqrt() * self.s_noise
        return torch.cat([(-a).exp()[:, None], noise[:, None], self.correction_scalars(h, a)], 1)

    def correction_scalars(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``(n, order - 1)``: each step's coefficients of :meth:`differences`, from the steps ``h`` and ``a``."""
        raise NotImplementedError

    def differences(self, denoised: torch.Tensor, history: list[torch.Tensor]) -> list[torch.Tensor]:
        """The differences of estimates the correction combines, with the earlier estimates ``history``."""
        return [denoised - history[-1]]

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        denoised = denoiser.x0_sigma(x, sigma)
        high, state = self.advance(state)
        if last:
            return denoised, denoised, state
        history = state["history"]
        decay, scale, *coefficients = cast(state["scalars"].index_select(0, state["row"])[0], x.dtype).unbind(0)
        # e^{-a} x + (1 - e^{-a}) D = D + e^{-a} (x - D): one lerp, a new tensor that the step then updates in place
        x = torch.lerp(denoised, x, decay)
        if history:
            terms = list(zip(coefficients, self.differences(denoised, history)))
            if high is None:
                for c, diff in terms:
                    x.addcmul_(diff, c)
            else:
                corrected = torch.addcmul(x, terms[0][1], terms[0][0])
                for c, diff in terms[1:]:
                    corrected.addcmul_(diff, c)
                x = self.select(high, corrected, x)
        if noise is not None:
            x.addcmul_(noise, scale)
        return x, denoised, {**state, "history": [*history, denoised][1 - self.order:], "row": state["row"] + 1}


def _levels_after(sigmas: torch.Tensor) -> torch.Tensor:
    """``sigma_{i+1}`` of every step of ``sigmas``, the 0 that ends a grid replaced by half the level before it:
    the step to 0 returns ``D`` and uses no coefficient, and its row stays finite (a log of 0 would give the grid
    a NaN gradient through it). A grid may also end above 0 (steps taken one by one)."""
    return torch.where(sigmas[1:] > 0, sigmas[1:], sigmas[:-1] / 2)


def _earlier(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values`` shifted ``k`` steps back (the first ``k`` entries repeat the first value: rows that have no
    such earlier step, whose result is not used, stay finite)."""
    return torch.cat([values[:1].expand(k), values])[:values.shape[0]]


class DPMpp2MSDESpec(_SDESpec):
    """DPM-Solver++(2M) SDE, midpoint or heun correction (k-diffusion's dpmpp_2m_sde; Lu et al. 2022b).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", {"name": "dpmpp_2m_sde", "solver_type": "heun"})
    DPMpp2MSDE(lower_order_final=False, eta=1.0, s_noise=1.0, solver_type='heun')
    """

    name: Literal["dpmpp_2m_sde"] = "dpmpp_2m_sde"
    solver_type: Literal["midpoint", "heun"] = Field("midpoint", description="The second-order correction.")
    builds = "DPMpp2MSDE"


class DPMpp2MSDE(_SDEMultistep):
    """The SDE form of DPM-Solver++(2M) with data prediction, ``h = log(sigma_i / sigma_{i+1})``, ``a = (1 + eta) h``.

    ``x <- (sigma_{i+1} / sigma_i) e^{-eta h} x + (1 - e^{-a}) D_i + c (D_i - D_{i-1}) / r`` with
    ``c = (1 - e^{-a}) / 2`` (midpoint) or ``1 - (1 - e^{-a}) / a`` (heun), ``r = h_{i-1} / h``,
    then ``+ s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps``. ``eta = 0`` is the ODE solver
    DPM-Solver++(2M) (with the chosen correction; the midpoint one is :class:`DPMpp2M`). The last
    step returns ``D``. N evaluations.
    """

    order = 2
    spec_class = DPMpp2MSDESpec

    def correction_scalars(self, h, a):
        decay = -torch.expm1(-a)  # 1 - e^{-a}
        c = decay / 2 if self.solver_type == "midpoint" else 1 - decay / a
        return (c * h / _earlier(h, 1))[:, None]  # on (D_i - D_{i-1}): 1 / r = h / h_{i-1}


class DPMpp2MSpec(_MultistepSpec):
    """DPM-Solver++(2M): multistep, one evaluation a step (Lu et al. 2022b).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "dpmpp_2m")
    DPMpp2MSpec(name='dpmpp_2m', lower_order_final=False)
    >>> ds.create("solver", {"name": "dpmpp_2m", "lower_order_final": True})
    DPMpp2M(lower_order_final=True)
    """

    name: Literal["dpmpp_2m"] = "dpmpp_2m"
    builds = "DPMpp2M"


class DPMpp2M(DPMpp2MSDE):
    """DPM-Solver++(2M) in ``lambda = -log sigma`` with data prediction (Lu et al. 2022b, Algorithm 2).

    For the unscaled latent (``alpha = 1``) with ``h_i = log(sigma_i / sigma_{i+1})``:
    ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - e^{-h_i}) D_eff`` where
    ``D_eff = (1 + 1/(2 r)) D_i - 1/(2 r) D_{i-1}``, ``r = h_{i-1} / h_i``; first order
    (``D_eff = D_i``, i.e. DDIM) on the first step and on the last step to ``sigma = 0``.
    N evaluations. It is :class:`DPMpp2MSDE` with ``eta = 0`` and the midpoint correction
    (``e^{-a} = sigma_{i+1} / sigma_i``, ``c / r = (1 - e^{-h}) / (2 r)``): one step, written once.
    """

    spec_class = DPMpp2MSpec
    stochastic = False
    eta = 0.0
    s_noise = 1.0
    solver_type = "midpoint"


class DPMpp3MSDESpec(_SDESpec):
    """DPM-Solver++(3M) SDE (k-diffusion's dpmpp_3m_sde; Lu et al. 2022b, third-order multistep).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "dpmpp_3m_sde")
    DPMpp3MSDE(lower_order_final=False, eta=1.0, s_noise=1.0)
    """

    name: Literal["dpmpp_3m_sde"] = "dpmpp_3m_sde"
    builds = "DPMpp3MSDE"


class DPMpp3MSDE(_SDEMultistep):
    """Third-order multistep in ``lambda = -log sigma``, data prediction, with noise; ``a = (1 + eta) h``.

    ``x <- e^{-a} x + (1 - e^{-a}) D_i + phi_2 D1 - phi_3 D2`` where, with ``r0 = h_{i-1} / h``,
    ``r1 = h_{i-2} / h``, ``d0 = (D_i - D_{i-1}) / r0``, ``d1 = (D_{i-1} - D_{i-2}) / r1``:
    ``D1 = d0 + (d0 - d1) r0 / (r0 + r1)``, ``D2 = (d0 - d1) / (r0 + r1)``,
    ``phi_2 = 1 - (1 - e^{-a}) / a``, ``phi_3 = phi_2 / a - 1/2`` (the exponential integrator's
    phi functions); second order (``phi_2 d0``) with one earlier estimate, first with none; then
    ``+ s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps``. The last step returns ``D``. N evaluations.
    """

    order = 3
    lookback = 2
    spec_class = DPMpp3MSDESpec

    def correction_scalars(self, h, a):
        """``phi_2 D1 - phi_3 D2`` written as ``c_0 (D_i - D_{i-1}) + c_2 (D_{i-2} - D_{i-1})``: the same linear
        combination with its coefficients computed on the scalars: two differences, which the step adds with
        two ``addcmul`` (four operations on the latent, not twelve).

        With ``k = (phi_2 r0 - phi_3) / (r0 + r1)``: ``c_0 = (phi_2 + k) / r0`` and ``c_2 = k / r1``; with one
        earlier estimate (step 1), ``phi_2 d0 = (phi_2 / r0) (D_i - D_{i-1})``.
        """
        phi_2 = torch.expm1(-a) / a + 1
        r0, r1 = _earlier(h, 1) / h, _earlier(h, 2) / h
        phi_3 = phi_2 / a - 0.5
        k = (phi_2 * r0 - phi_3) / (r0 + r1)
        full = torch.stack([(phi_2 + k) / r0, k / r1], 1)
        one = torch.stack([phi_2 / r0, torch.zeros_like(h)], 1)
        second = (torch.arange(h.shape[0], device=h.device) == 1)[:, None]  # the step with one earlier estimate
        return torch.where(second, one, full)

    def differences(self, denoised, history):
        previous = history[-1]
        return [denoised - previous] if len(history) == 1 else [denoised - previous, history[-2] - previous]


class LMSSpec(_MultistepSpec):
    """Linear multistep (Adams-Bashforth with variable steps) in the noise level (k-diffusion's lms).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", {"name": "lms", "order": 3})
    LMS(lower_order_final=False, order=3, startup='runge-kutta')
    """

    name: Literal["lms"] = "lms"
    order: int = Field(4, ge=1, le=4, description="How many slopes the step combines (the method's order).")
    startup: Literal["runge-kutta", "k-diffusion"] = Field(
        "runge-kutta",
        description="The first steps: 'runge-kutta' keeps the order (extra evaluations); "
        "'k-diffusion' uses fewer slopes there (k-diffusion's samples, lower order).",
    )
    builds = "LMS"


def lms_weights(sigmas: torch.Tensor, order: int) -> torch.Tensor:
    """The Adams-Bashforth weights of every step of ``sigmas``: row ``i``, entry ``j`` is the weight of the slope at
    ``sigma_{i-j}`` in step ``i``'s update ``x_{i+1} = x_i + sum_j w_ij d_{i-j}``.

    ``w_ij`` is the integral over ``[sigma_i, sigma_{i+1}]`` of the Lagrange polynomial through the
    ``min(order, i + 1)`` levels ``sigma_i, sigma_{i-1}, ...`` that is 1 at ``sigma_{i-j}`` (0 past those levels).
    The integrand has degree at most 3, which two-point Gauss-Legendre quadrature integrates exactly (Abramowitz
    & Stegun 25.4.29). Computed once per grid, on its device and differentiably (``ds.calibrate_sigmas``
    differentiates the samples with respect to the grid), instead of a hundred operations on single numbers at
    every step.

    >>> import torch
    >>> w = lms_weights(torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64), 2)
    >>> w.tolist()    # steps of -1: Euler first, then Adams-Bashforth 2's 3/2 and -1/2 times the step
    [[-1.0, 0.0], [-1.5, 0.5], [-1.5, 0.5]]
    """
    n = sigmas.shape[0] - 1
    steps = torch.arange(n, device=sigmas.device)[:, None] - torch.arange(order, device=sigmas.device)  # i - k
    valid = steps >= 0  # the levels step i has (min(order, i + 1) of them)
    nodes = sigmas[steps.clamp(min=0)]  # (n, order): sigma_{i-k}
    # (i, j, k): the factor of node k in basis polynomial j, where both are levels step i has and k != j (elsewhere
    # 1, and no division by a gap of 0, whose gradient would be NaN even where the result is not used)
    use = valid[:, :, None] & valid[:, None, :] & ~torch.eye(order, dtype=torch.bool, device=sigmas.device)
    gap = torch.where(use, nodes[:, :, None] - nodes[:, None, :], torch.ones_like(nodes[:, :, None]))
    lo, hi = sigmas[:-1], sigmas[1:]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    total = torch.zeros_like(nodes)
    for s in (mid - half / math.sqrt(3), mid + half / math.sqrt(3)):
        factors = torch.where(use, (s[:, None, None] - nodes[:, None, :]) / gap, torch.ones_like(gap))
        total = total + factors.prod(-1) * half[:, None]
    return torch.where(valid, total, torch.zeros_like(total))


def _adams_bashforth(x, slopes, weights, sigma, sigma_next):
    """``x + sum_j c_j d_j`` over ``slopes`` (``(d, sigma)``, oldest first), ``c_j`` the step's :func:`lms_weights`
    for all of them, or ``sigma_next - sigma`` for the newest one alone (first order).

    One ``addcmul`` on the latent per slope: the first makes a new tensor, the others add to it in place.
    """
    if len(slopes) == 1:
        return torch.addcmul(x, slopes[0][0], cast(sigma_next - sigma, x.dtype))
    out = None
    for (d, _), c in zip(reversed(slopes), cast(weights, x.dtype).unbind(0)):
        out = torch.addcmul(x, d, c) if out is None else out.addcmul_(d, c)
    return out


#: Ralston's Runge-Kutta methods of order 2 and 3 (Ralston 1962; the error-minimising choices of
#: their families), as Butcher tableaux ``(c, a, b)``: stages at ``sigma + c_k h``, all inside the step.
RALSTON = {
    2: ((0.0, 2 / 3), ((), (2 / 3,)), (1 / 4, 3 / 4)),
    3: ((0.0, 1 / 2, 3 / 4), ((), (1 / 2,), (0.0, 3 / 4)), (2 / 9, 1 / 3, 4 / 9)),
}


def _runge_kutta(denoiser, x, d, sigma, sigma_next, tableau):
    """One explicit Runge-Kutta step of ``dx/dsigma = (x - D) / sigma``; ``d`` is the slope at ``(x, sigma)``."""
    c, a, b = tableau
    h = sigma_next - sigma
    slopes = [d]
    for k in range(1, len(c)):
        x_k = x + cast(h, x.dtype) * sum(weight * slope for weight, slope in zip(a[k], slopes))
        sigma_k = sigma + c[k] * h
        slopes.append(to_d(x_k, sigma_k, denoiser.x0_sigma(x_k, sigma_k)))
    return x + cast(h, x.dtype) * sum(weight * slope for weight, slope in zip(b, slopes))


class LMS(_Multistep):
    """``x_{i+1} = x_i + sum_j c_j d_{i-j}``, ``c_j`` the integral over ``[sigma_i, sigma_{i+1}]`` of the
    Lagrange polynomial through ``sigma_i, ..., sigma_{i-p+1}`` that is 1 at ``sigma_{i-j}``, with
    the slopes ``d = (x - D) / sigma`` at the earlier noise levels; the step to 0 uses the same formula.

    The weights of every step are computed once per grid, in :meth:`start` (:func:`lms_weights`). The first
    ``p - 1`` steps have fewer slopes. With ``startup="k-diffusion"`` they use the ones
    there are (``min(p, i + 1)``: Euler first), as k-diffusion does; that first step's error is
    ``O(h^2)``, so the method converges with order 2 on fine grids. A linear multistep method of
    order ``p`` keeps order ``p`` when its starting values are ``O(h^p)`` accurate (Hairer, Norsett &
    Wanner, Solving ODEs I, Sec. III.4): the default ``startup="runge-kutta"`` takes each first step
    whose Adams-Bashforth order would be below ``p - 1`` with Ralston's Runge-Kutta method of order
    ``p - 1`` (its first stage the slope at ``sigma_i``, which the history keeps), so ``p - 2`` more
    evaluations on each of the first ``p - 2`` steps: for ``p = 4`` steps 0 and 1 cost 3, and N steps
    ``N + 4`` evaluations (N for ``p <= 2``). The step to 0 is never a Runge-Kutta step.
    The state holds the history, the list of ``(d, sigma)``, the weights of every step (``weights``) and the
    index of the next step's row (``row``, a tensor, so one compiled step serves every step).
    """

    order = 4  # the spec's field sets the instance's
    spec_class = LMSSpec

    def step_sizes(self, sigmas):
        return sigmas[:-1] - sigmas[1:]

    def start(self, sigmas):
        return {**super().start(sigmas), "weights": lms_weights(sigmas, self.order),
                "row": torch.zeros(1, dtype=torch.long, device=sigmas.device)}

    def runge_kutta_steps(self, num_steps: int) -> int:
        """How many of ``num_steps`` steps are Runge-Kutta steps (the first ones, never the last)."""
        if self.startup != "runge-kutta" or self.order < 3:
            return 0
        return min(self.order - 2, num_steps - 1)

    def nfe(self, num_steps):
        return num_steps + (self.order - 2) * self.runge_kutta_steps(num_steps)

    def level_bounds(self, sigmas, i):
        """A Runge-Kutta step's stages ``sigma_i + c_k (sigma_{i+1} - sigma_i)``, ``0 < c_k < 1``, lie between the two."""
        return sigmas[i + 1], sigmas[i]

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        denoised = denoiser.x0_sigma(x, sigma)
        high, state = self.advance(state)
        history = [*state["history"], (to_d(x, sigma, denoised), sigma)][-self.order:]
        weights = state["weights"].index_select(0, state["row"])[0]  # this step's row: no host read, no branch
        state = {**state, "history": history, "row": state["row"] + 1}
        if self.startup == "runge-kutta" and not last and len(history) < self.order - 1:
            return _runge_kutta(denoiser, x, history[-1][0], sigma, sigma_next, RALSTON[self.order - 1]), denoised, state
        return (self.by_plan(high, history, lambda used: _adams_bashforth(x, used, weights, sigma, sigma_next)),
                denoised, state)


class UniPCSpec(_MultistepSpec):
    """UniPC: unified predictor-corrector, bh2 variant, data prediction (Zhao et al. 2023).

    >>> import diffusion_schemes as ds
    >>> solver = ds.create("solver", {"name": "unipc", "order": 2})
    >>> solver, solver.order
    (UniPC(lower_order_final=False, order=2), 3)
    """

    name: Literal["unipc"] = "unipc"
    order: int = Field(2, ge=1, le=3, description="Order p of the predictor UniP-p; the corrector UniC raises it to p + 1.")
    builds = "UniPC"


def _unipc_rhos(rks: torch.Tensor, hh: torch.Tensor, predictor: bool) -> torch.Tensor:
    """The ``rho`` of UniP / UniC (Zhao et al. 2023, Algorithms 2-3) with ``B(h) = e^h - 1`` (bh2), for a batch of
    steps: ``rks`` is ``(n, p)``, each row the ratios of the earlier steps (``r_k``) then 1, and ``hh`` is ``(n,)``.

    The coefficients solve ``sum_m rho_m r_m^(k-1) = k! phi_{k+1}(h) / B(h)`` for ``k = 1..p``; UniP uses the first
    ``p - 1`` rows and columns (with ``rho = 1/2`` for ``p = 2``), UniC all of them (``rho = 1/2`` for ``p = 1``).
    """
    n, order = rks.shape
    if (predictor and order == 2) or (not predictor and order == 1):
        return torch.full((n, 1), 0.5, dtype=hh.dtype, device=hh.device)
    b_h = torch.expm1(hh)
    h_phi_k = torch.expm1(hh) / hh - 1
    factorial = 1
    rows, rhs = [], []
    for k in range(1, order + 1):
        rows.append(rks ** (k - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = torch.stack(rows, 1), torch.stack(rhs, 1)
    if predictor:
        R, b = R[:, :-1, :-1], b[:, :-1]
    return torch.linalg.solve(R, b)


def unipc_coefficients(sigmas: torch.Tensor, order: int) -> torch.Tensor:
    """UniPC's scalars for every step of ``sigmas`` (the step to 0 returns ``D`` and uses none), with ``order`` the
    predictor's order ``p`` (the estimates kept): row ``i`` holds the factors ``-B(h) rho_k / r_k`` that each
    difference is added with, as ``[UniP's (p - 1 columns), UniC's (p columns), UniC's first order (1 column)]``.

    Step ``i`` has ``min(p, i + 1)`` estimates ``D_i, D_{i-1}, ...``; UniP's differences are ``D_{i-k} - D_i`` for
    the earlier ones, UniC's the same then ``D_{i+1} - D_i``, its first order (``lower_order_final``) that last one
    alone; unused columns are 0. Computed once per grid, batched over the steps, on the grid's device and
    differentiably, instead of a small linear solve and some forty operations on single numbers at every step.

    >>> import torch
    >>> c = unipc_coefficients(torch.tensor([80.0, 10.0, 1.0, 0.0], dtype=torch.float64), 2)
    >>> c.shape                                  # a row a step (the third, to 0, uses none): UniP 1, UniC 2, 1
    torch.Size([3, 4])
    >>> c[0, 0].item(), c[0, 2].item()          # the first step has one estimate: no difference for UniP
    (0.0, 0.0)
    >>> bool(c[0, 1] == c[0, 3])                # nor for UniC but the new one: its first order
    True
    """
    n = sigmas.shape[0] - 1
    lam = -torch.cat([sigmas[:1], _levels_after(sigmas)]).log()  # the step to 0 makes no update: a finite row
    lam_i, h = lam[:-1], lam[1:] - lam[:-1]
    hh = -h
    b_h = torch.expm1(hh)
    steps = torch.arange(n, device=sigmas.device)
    ratios = []  # r_k = (lambda_{i-k} - lambda_i) / h, k = 1..p-1; a distinct placeholder where step i has no D_{i-k}
    for k in range(1, order):
        r = (lam[(steps - k).clamp(min=0)] - lam_i) / h
        ratios.append(torch.where(steps >= k, r, torch.full_like(r, k + 1.0)))  # the real ones are negative
    ones = torch.ones_like(h)
    have = torch.clamp(steps + 1, max=order)  # estimates each step has
    pred, corr = sigmas.new_zeros((n, order - 1)), sigmas.new_zeros((n, order))
    for count in range(1, order + 1):
        rks = torch.stack([*ratios[:count - 1], ones], 1)
        these = (have == count)[:, None]
        if count > 1:
            factors = -b_h[:, None] * _unipc_rhos(rks, hh, True) / rks[:, :-1]
            pred = torch.where(these, torch.nn.functional.pad(factors, (0, order - count)), pred)
        factors = -b_h[:, None] * _unipc_rhos(rks, hh, False) / rks
        corr = torch.where(these, torch.nn.functional.pad(factors, (0, order - count)), corr)
    first = -b_h[:, None] * _unipc_rhos(ones[:, None], hh, False) / ones[:, None]
    return torch.cat([pred, corr, first], 1)


class UniPC(_Multistep):
    """UniP-p with the corrector UniC (order ``p + 1``) in ``lambda = -log sigma``, ``B(h) = e^h - 1`` (bh2).

    With ``h = lambda_{i+1} - lambda_i``, ``D1_k = (D_{i-k} - D_i) / r_k``, ``r_k = (lambda_{i-k} - lambda_i) / h``:
    ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - e^{-h}) D_i - (e^{-h} - 1) sum_k rho_k D1_k``.
    After the evaluation at ``x_{i+1}``, UniC redoes that step with ``D_{i+1} - D_i`` as one more
    difference (no extra evaluation). The step to 0 returns ``D``. N evaluations.

    The scalars of every step are computed once per grid, in :meth:`start` (:func:`unipc_coefficients`); the
    state holds the estimates kept (``history``), those scalars (``coefficients``), the index of the next
    step's row (``row``, a tensor, so one compiled step serves every step) and what UniC needs of the step
    before (``previous``).
    """

    spec_class = UniPCSpec

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = self.spec.order + 1

    def start(self, sigmas):
        return {**super().start(sigmas), "previous": None, "coefficients": unipc_coefficients(sigmas, self.spec.order),
                "row": torch.zeros(1, dtype=torch.long, device=sigmas.device)}

    @staticmethod
    def _update(x, sigma, sigma_next, history, new, factors):
        """The UniP (``new`` None) or UniC step from ``sigma`` with ``history`` ending at the estimate at ``sigma``.

        On the latent: ``(sigma_{i+1} / sigma_i) x + (1 - sigma_{i+1} / sigma_i) D_i`` as one ``lerp``
        (``e^{-h} = sigma_{i+1} / sigma_i``), then each ``- B(h) rho_k D1_k`` as one ``addcmul`` of the difference
        ``D_{i-k} - D_i`` with its scalar from :func:`unipc_coefficients` (``factors``, in the differences' order):
        one operation per difference and term.
        """
        denoised = history[-1]
        diffs = [prev - denoised for prev in reversed(history[:-1])]
        if new is not None:
            diffs.append(new - denoised)
        x = torch.lerp(denoised, x, cast(sigma_next / sigma, x.dtype))
        for factor, diff in zip(cast(factors, x.dtype).unbind(0), diffs):
            x.addcmul_(diff, factor)
        return x

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        denoised = denoiser.x0_sigma(x, sigma)
        history, previous = state["history"], state["previous"]
        high, state = self.advance(state)
        if previous is not None and not last:  # UniC: correct x with the evaluation just made (unused on the step to 0)
            x_prev, sigma_prev, used_high, corr, first = previous  # the predictor's plan entry and step's scalars
            x = self.by_plan(used_high, history, lambda used: self._update(
                x_prev, sigma_prev, sigma, used, denoised, corr if len(used) > 1 else first))
        history = [*history, denoised][-self.spec.order:]
        if last:
            return denoised, denoised, {**state, "history": history, "previous": None}
        p = self.spec.order
        row = state["coefficients"].index_select(0, state["row"])[0]  # this step's scalars: no host read, no branch
        x_next = self.by_plan(high, history, lambda used: self._update(x, sigma, sigma_next, used, None, row[:p - 1]))
        state = {**state, "history": history, "row": state["row"] + 1}
        return x_next, denoised, {**state, "previous": (x, sigma, high, row[p - 1:2 * p - 1], row[2 * p - 1:])}
