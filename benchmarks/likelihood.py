"""Figure 8: what a log-likelihood costs at equal accuracy: exact trace, Hutchinson, k-diffusion's ``log_likelihood``.

Data: Gaussian mixtures (the 3-component 2-D mixture of the tests, and 4 components in 16 dimensions) with
their exact denoiser in float64 in place of a network, so the exact answer is the mixture's own density
``log p(x; sigma_min)`` (sigma_min = 0.002, sigma_max = 1000: the prior's share is below 1e-4 nats).

Accuracy is that of what an evaluation reports, the mean log-likelihood of a held-out set (``N`` draws):
``|mean(estimate) - mean(exact)|``; for the estimators with random probes (Hutchinson; k-diffusion, whose
one Rademacher probe is fixed) the root mean square of that error over seeds. The target is what a table of
bits per dimension to two decimals needs, 0.005 bits/dim, i.e. ``0.005 D ln 2`` nats. Each method is swept
over its knobs (tolerance, fixed steps, probes; k-diffusion takes one probe per call, so more probes are
more calls averaged), and the setting that reaches the target with the least work is reported: model calls
(each on the whole set) times one forward and the backward passes of a call (the exact trace: one per
dimension, vmapped; Hutchinson: one per probe). Seconds (median over seeds or repeats) are shown beside it;
on a loaded machine they are noisy, the work is not.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture
from .kdiffusion_oracle import load_sampling

from ._settings import Settings
from ._timing import fmt_time

TARGET_BITS = 0.005  # bits per dimension on the mean of the set: two decimals of a bits/dim table
SIGMA_MIN, SIGMA_MAX = 0.002, 1000.0


def mixtures() -> dict[int, GaussianMixture]:
    """The tests' 2-D mixture, and four components in 16 dimensions (means ~ N(0, I), stds 0.3 to 0.6)."""
    g = torch.Generator().manual_seed(0)
    return {
        2: GaussianMixture([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], [0.2, 0.4, 0.3], [0.5, 0.25, 0.25]),
        16: GaussianMixture(torch.randn(4, 16, generator=g, dtype=torch.float64), [0.3, 0.4, 0.5, 0.6], torch.ones(4)),
    }


def exact_log_density(mixture: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    var = mixture.stds**2 + sigma**2
    sq = ((x[:, None, :] - mixture.means[None]) ** 2).sum(-1)
    return torch.logsumexp(mixture.weights.log() - 0.5 * sq / var - 0.5 * mixture.dim * torch.log(2 * math.pi * var), 1)


def _timed(fn):
    start = time.perf_counter()
    value, nfe = fn()
    return value, nfe, time.perf_counter() - start


def target_nats(dim: int) -> float:
    return TARGET_BITS * dim * math.log(2)


def _measure(fn, seeds: int, random: bool, truth: float) -> dict[str, float]:
    """Error (RMS over seeds when the method draws probes), model calls and median seconds of ``fn(seed)``."""
    runs = [_timed(lambda s=s: fn(s)) for s in range(seeds if random else 2)]
    errors = [float(v.mean()) - truth for v, _, _ in runs]
    error = math.sqrt(sum(e * e for e in errors) / len(errors)) if random else abs(errors[0])
    return {"error": error, "nfe": runs[0][1], "seconds": statistics.median(r[2] for r in runs)}


def _sweep(label: str, settings_list, fn, passes, seeds: int, random: bool, truth: float,
           target: float) -> dict[str, object]:
    """Every setting's measurement, and the least work (calls x (1 + ``passes(setting)``)) that meets ``target``."""
    fn(settings_list[0], 0)  # warm-up: the first call pays for imports and allocations
    tried = []
    for setting in settings_list:
        measured = _measure(lambda s, setting=setting: fn(setting, s), seeds, random, truth)
        tried.append({"setting": setting, "passes": passes(setting), **measured,
                      "work": measured["nfe"] * (1 + passes(setting))})
    met = [t for t in tried if t["error"] <= target]
    best = min(met, key=lambda t: t["work"]) if met else None
    return {"method": label, "tried": tried, "best": best, "target": target}


def _one_dimension(dim: int, mixture: GaussianMixture, settings: Settings) -> list[dict[str, object]]:
    n = 64 if settings.quick else 256
    seeds = 2 if settings.quick else 4
    target = target_nats(dim)
    x = mixture.sample(n, generator=torch.Generator().manual_seed(1))
    truth = float(exact_log_density(mixture, x, SIGMA_MIN).mean())
    schedule = ds.create("noise_schedule", "edm")
    model = ExactX0(mixture, schedule).double()
    common = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX}
    tolerances = (1e-2, 1e-3) if settings.quick else (1e-2, 1e-3, 1e-4, 1e-5)
    steps = (8, 16) if settings.quick else (8, 16, 32, 64)
    probes = (1, 4) if settings.quick else (1, 4, 16, 64, 256)

    def ours(setting, seed):
        kind, value = setting
        if kind == "tol":
            result = ds.log_likelihood(model, x, schedule, rtol=value, atol=value, **common)
        elif kind == "steps":
            result = ds.log_likelihood(model, x, schedule, num_steps=value, **common)
        else:
            tol, k = value
            result = ds.log_likelihood(model, x, schedule, rtol=tol, atol=tol, divergence="hutchinson", num_probes=k,
                                       generator=torch.Generator().manual_seed(seed), **common)
        return result.log_prob, result.nfe

    sampling = load_sampling()
    denoise = lambda x, sigma: mixture.denoise(x, sigma)  # noqa: E731

    def kdiffusion(setting, seed):
        tol, calls = setting
        torch.manual_seed(seed)  # its probe comes from the global generator
        values, nfe = [], 0
        for _ in range(calls):
            value, info = sampling.log_likelihood(denoise, x, SIGMA_MIN, SIGMA_MAX, atol=tol, rtol=tol)
            values.append(value)
            nfe += info["fevals"]
        return torch.stack(values).mean(0), nfe

    hutchinson_settings = [("probes", (tol, k)) for tol in tolerances[1:3] for k in probes]
    kd_settings = [(tol, r) for tol in tolerances[1:3] for r in probes[:3]]
    exact_passes = lambda setting: dim  # noqa: E731
    rows = [
        _sweep("exact trace, adaptive (torchode)", [("tol", t) for t in tolerances], ours, exact_passes, seeds,
               False, truth, target),
        _sweep("exact trace, fixed RK4 (num_steps)", [("steps", s) for s in steps], ours, exact_passes, seeds,
               False, truth, target),
        _sweep("Hutchinson (Rademacher), adaptive", hutchinson_settings, ours, lambda setting: setting[1][1], seeds,
               True, truth, target),
        _sweep("k-diffusion log_likelihood (1 probe a call)", kd_settings, kdiffusion, lambda setting: 1, seeds,
               True, truth, target),
    ]
    for row in rows:
        row["dim"] = dim
    return rows


def _describe(setting) -> str:
    if isinstance(setting, tuple) and setting[0] == "tol":
        return f"rtol = atol = {setting[1]:g}"
    if isinstance(setting, tuple) and setting[0] == "steps":
        return f"{setting[1]} steps"
    if isinstance(setting, tuple) and setting[0] == "probes":
        return f"tol {setting[1][0]:g}, {setting[1][1]} probes"
    return f"tol {setting[0]:g}, mean of {setting[1]} calls"


def run(settings: Settings) -> dict[str, object]:
    results = []
    for dim, mixture in mixtures().items():
        if settings.quick and dim > 2:
            continue
        results += _one_dimension(dim, mixture, settings)
    rows, all_rows = [], []
    for r in results:
        best = r["best"]
        rows.append({
            "D": str(r["dim"]), "target (nats)": f"{r['target']:.3f}", "method": r["method"],
            "least work that meets it": _describe(best["setting"]) if best else "none of those tried",
            "model calls": str(best["nfe"]) if best else "",
            "backward passes a call": str(best["passes"]) if best else "",
            "work (calls x (1 + passes))": str(best["work"]) if best else "",
            "seconds": fmt_time(best["seconds"]) if best else "",
            "error of the mean (nats)": f"{best['error']:.1e}" if best else "",
        })
        for t in r["tried"]:
            all_rows.append({"D": str(r["dim"]), "method": r["method"], "setting": _describe(t["setting"]),
                             "model calls": str(t["nfe"]), "backward passes a call": str(t["passes"]),
                             "work (calls x (1 + passes))": str(t["work"]), "seconds": fmt_time(t["seconds"]),
                             "error of the mean (nats)": f"{t['error']:.1e}"})
    return {
        "id": "likelihood",
        "title": "8. Log-likelihood: cost at equal accuracy",
        "description": (
            f"The mean log-likelihood of {64 if settings.quick else 256} draws of a Gaussian mixture (exact "
            f"denoiser, float64; sigma from {SIGMA_MIN} to {SIGMA_MAX:g}) to within {TARGET_BITS} bits per "
            "dimension of the mixture's own: the setting of each method that gets there with the least work "
            "(model calls times one forward and the call's backward passes; RMS error over seeds where probes are "
            "drawn), and its median seconds."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "extra_tables": [{"title": "Every setting tried", "description": "The sweep behind the table above.",
                          "columns": list(all_rows[0]), "rows": all_rows}],
        "aims": [],
        "data": {"target_bits_per_dim": TARGET_BITS, "results": results},
    }
