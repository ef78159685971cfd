"""Figure 6: solvers ranked by error against evaluations, on the EDM grid and on VP's.

Data: the 2-D ring of 8 Gaussians (std 0.1) of Figure 5, its exact denoiser in place of a
network (float64), so the error left is the solver's alone.

- Deterministic solvers: the mean Euclidean distance of the final samples to the converged
  solution of the same probability-flow ODE from the same latents (Heun on 3000 geometric steps
  between the grid's first and last positive noise levels, then the denoised estimate there, as
  every solver ends). No sampling noise enters: differences are the solvers'.
- Stochastic solvers: the sliced W1 distance of Figure 5 to the mixture, averaged over seeds,
  with its standard deviation across seeds; the floor is the same distance for exact samples.

The step count at each budget is the largest whose evaluations fit it; ``dpm_adaptive`` picks its
own steps, so it is listed by tolerance with the evaluations it spent.

Calibrated grids (``ds.calibrate_sigmas``): every deterministic solver at 5, 10, 20 and 50
evaluations on every built-in grid and on a grid calibrated for it on other latents (seed 1;
the error is measured on the seed-0 latents above), beside k-diffusion's most accurate
deterministic sampler on its own grids between the same two noise levels
(``benchmarks/kdiffusion_best.py``), and what each calibration cost.
"""

from __future__ import annotations

import math
import statistics

import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance.mixture import GaussianMixture

from . import kdiffusion_best

from ._settings import Settings
from .sampling import SlicedW1, ring_mixture

DETERMINISTIC = ["euler", "heun", "dpm_2", "lms", {"name": "lms", "startup": "k-diffusion"}, "dpmpp_2m", {"name": "dpmpp_2m", "lower_order_final": True},
                 "unipc", {"name": "unipc", "lower_order_final": True}, {"name": "unipc", "order": 3},
                 {"name": "dpmpp_3m_sde", "eta": 0.0}]
STOCHASTIC = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde",
              "edm_stochastic_heun", "euler_maruyama"]
TOLERANCES = (1e-1, 1e-2, 1e-3)
GRIDS = ("schedule", "karras", "log_snr_uniform", "polyexponential", "linear_time")
CALIBRATION_BUDGETS = (5, 10, 20, 50)
CALIBRATION_LATENTS = 256


def label(config) -> str:
    if isinstance(config, str):
        return config
    return config["name"] + "(" + ", ".join(f"{k}={v}" for k, v in config.items() if k != "name") + ")"


def _table(title: str, description: str, rows: list[dict[str, object]]) -> dict[str, object]:
    return {"title": title, "description": description, "columns": list(rows[0]), "rows": rows}


def _steps_for(solver, budget: int) -> int:
    return max([k for k in range(1, budget + 1) if solver.nfe(k) <= budget] or [1])


def _rank(schedule_name: str, mixture: GaussianMixture, settings: Settings) -> dict[str, object]:
    schedule = ds.create("noise_schedule", schedule_name)
    denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=lambda x, t: mixture.denoise(x, t))
    n = settings.samples // 4 if not settings.quick else 256
    ends = schedule.sigmas(2).to(torch.float64)
    x = float(ends[0]) * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.linspace(math.log(float(ends[0])), math.log(float(ends[1])), 3000 if not settings.quick else 300,
                          dtype=torch.float64).exp()
    reference = ds.create("solver", "heun")(denoiser, x.clone(), torch.cat([grid, grid.new_zeros(1)]))[0]
    error = lambda out: float((out - reference).pow(2).sum(1).sqrt().mean())  # noqa: E731
    det = {}
    for config in DETERMINISTIC:
        solver = ds.create("solver", config)
        det[label(config)] = []
        for budget in settings.budgets:
            out, nfe = solver(denoiser, x.clone(), schedule.sigmas(_steps_for(solver, budget)).to(torch.float64))
            det[label(config)].append({"budget": budget, "nfe": nfe, "error": error(out)})
    adaptive = []
    for tol in TOLERANCES:
        out, nfe = ds.create("solver", {"name": "dpm_adaptive", "rtol": tol, "atol": tol})(
            denoiser, x.clone(), schedule.sigmas(2).to(torch.float64))
        adaptive.append({"tol": tol, "nfe": nfe, "error": error(out)})
    sliced = SlicedW1(mixture, n)
    seeds = range(3 if settings.quick else 5)
    floor = [sliced(mixture.sample(n, generator=torch.Generator().manual_seed(100 + s))) for s in seeds]
    sto = {}
    for config in STOCHASTIC:
        solver = ds.create("solver", config)
        sto[label(config)] = []
        for budget in settings.budgets:
            values, nfe = [], 0
            for seed in seeds:
                g = torch.Generator().manual_seed(seed)
                latents = float(ends[0]) * torch.randn(n, 2, generator=g, dtype=torch.float64)
                out, nfe = solver(denoiser, latents, schedule.sigmas(_steps_for(solver, budget)).to(torch.float64),
                                  generator=g)
                values.append(sliced(out))
            sto[label(config)].append({"budget": budget, "nfe": nfe, "mean": statistics.mean(values),
                                       "std": statistics.stdev(values)})
    return {"samples": n, "deterministic": det, "adaptive": adaptive, "stochastic": sto,
            "floor": {"mean": statistics.mean(floor), "std": statistics.stdev(floor)}}


def _calibrated(schedule_name: str, mixture: GaussianMixture, settings: Settings) -> dict[str, object]:
    """Error per budget on every built-in grid and on a calibrated one; k-diffusion's best beside them."""
    schedule = ds.create("noise_schedule", schedule_name)
    denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=lambda x, t: mixture.denoise(x, t))
    n = settings.samples // 4 if not settings.quick else 256
    ends = schedule.sigmas(2).to(torch.float64)
    hi, lo = float(ends[0]), float(ends[1])
    x = hi * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = hi * torch.randn(CALIBRATION_LATENTS if not settings.quick else 64, 2,
                           generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = torch.linspace(math.log(hi), math.log(lo), 3000 if not settings.quick else 300, dtype=torch.float64).exp()
    reference = ds.create("solver", "heun")(denoiser, x.clone(), torch.cat([grid, grid.new_zeros(1)]))[0]
    budgets = CALIBRATION_BUDGETS if not settings.quick else (10,)
    solvers = DETERMINISTIC if not settings.quick else DETERMINISTIC[3:5]
    rows, cost, best = [], [], {}
    for config in solvers:
        solver = ds.create("solver", config)
        for budget in budgets:
            steps = _steps_for(solver, budget)
            row = {"solver": label(config), "evals": solver.nfe(steps)}
            for name in GRIDS:
                out = ds.sample(denoiser, x, schedule, steps, solver, discretization=name).samples
                row[name] = kdiffusion_best.error(out, reference)
            result = ds.calibrate_sigmas(denoiser, fit, schedule, steps, solver,
                                         reference_steps=512 if not settings.quick else 64)
            out = ds.sample(denoiser, x, schedule, sigmas=result.sigmas, solver=solver).samples
            row["calibrated"] = kdiffusion_best.error(out, reference)
            rows.append(row)
            cost.append({"solver": label(config), "evals": row["evals"], "model evaluations": result.model_evaluations,
                         "backward passes": result.backward_passes, "seconds": result.seconds,
                         "fit error before": result.error_before, "fit error after": result.error_after})
    for budget in budgets:
        name, value = kdiffusion_best.best(mixture.denoise, x, reference, lo, hi, budget, vp=schedule_name == "vp")
        ours = min(((r[g], f"{r['solver']} on {g}") for r in rows if r["evals"] <= budget
                    for g in (*GRIDS, "calibrated")), key=lambda item: item[0])
        best[budget] = {"k-diffusion": {"label": name, "error": value}, "ours": {"label": ours[1], "error": ours[0]}}
    return {"samples": n, "calibration_latents": fit.shape[0], "rows": rows, "cost": cost, "best": best}


def run(settings: Settings) -> dict[str, object]:
    mixture = ring_mixture()
    data = {name: _rank(name, mixture, settings) for name in ("edm", "vp")}
    calibrated = {name: _calibrated(name, mixture, settings) for name in ("edm", "vp")}
    budgets = settings.budgets
    rows, best = [], {}
    for grid, result in data.items():
        for name, runs in result["deterministic"].items():
            rows.append({"grid": grid, "solver": name,
                         **{f"{r['budget']} evals": f"{r['error']:.2e} ({r['nfe']})" for r in runs}})
        for i, b in enumerate(budgets):
            best[f"{grid} {b}"] = min(result["deterministic"], key=lambda s: result["deterministic"][s][i]["error"])
    sto_rows = []
    for grid, result in data.items():
        for name, runs in result["stochastic"].items():
            sto_rows.append({"grid": grid, "solver": name,
                             **{f"{r['budget']} evals": f"{r['mean']:.4f} ± {r['std']:.4f}" for r in runs}})
        f = result["floor"]
        sto_rows.append({"grid": grid, "solver": "exact samples (floor)",
                         **{f"{b} evals": f"{f['mean']:.4f} ± {f['std']:.4f}" for b in budgets}})
    cal_rows = [{"noise schedule": grid, **{k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in row.items()}}
                for grid, result in calibrated.items() for row in result["rows"]]
    cost_rows = [{"noise schedule": grid, **{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in row.items()}}
                 for grid, result in calibrated.items() for row in result["cost"]]
    best_rows = [{"noise schedule": grid, "evals": budget,
                  "k-diffusion's best": f"{b['k-diffusion']['error']:.2e} ({b['k-diffusion']['label']})",
                  "ours": f"{b['ours']['error']:.2e} ({b['ours']['label']})",
                  "ratio": f"{b['k-diffusion']['error'] / b['ours']['error']:.1f}x"}
                 for grid, result in calibrated.items() for budget, b in result["best"].items()]
    ada_rows = [{"grid": grid, **{f"tol {r['tol']:g}": f"{r['error']:.2e} ({r['nfe']})" for r in result["adaptive"]}}
                for grid, result in data.items()]
    return {
        "id": "solvers",
        "title": "6. Solvers ranked: error against evaluations",
        "description": (
            "Deterministic solvers: mean distance of the final samples to the converged ODE solution from the same "
            f"latents ({data['edm']['samples']} samples of the ring mixture, exact denoiser, float64); in brackets "
            "the evaluations spent. Lower is better. Best per grid and budget: "
            + ", ".join(f"{k}: `{v}`" for k, v in best.items()) + "."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "extra_tables": [
            _table("dpm_adaptive by tolerance (rtol = atol)",
                   "Same error; in brackets the evaluations it chose to spend.", ada_rows),
            _table("Stochastic solvers",
                   "Sliced W1 to the mixture, mean ± standard deviation over seeds (latents and noise drawn per "
                   "seed); the floor row is the same distance for exact samples.", sto_rows),
            _table("Every grid and the calibrated one, against k-diffusion's best",
                   "Best deterministic run per budget: ours over every solver and grid (the calibrated grid fitted "
                   "on other latents), k-diffusion's over its deterministic samplers on its own grids between the "
                   "same noise levels; ratio = k-diffusion's error / ours.", best_rows),
            _table("Error per grid",
                   "Same error as above, per deterministic solver and budget, on each built-in grid and on the grid "
                   "calibrated for that solver and step count on "
                   f"{calibrated['edm']['calibration_latents']} other latents.", cal_rows),
            _table("What the calibration cost",
                   "Network evaluations per sample in all (the Heun reference, then L-BFGS), solver runs "
                   "differentiated, seconds on this machine, and the calibration error (on the fitting latents) on "
                   "the schedule's grid and on the calibrated one.", cost_rows),
        ],
        "aims": [],
        "data": {"results": data, "best_per_budget": best, "calibrated": calibrated},
    }


def plot(report_json, out_png) -> None:
    """Error against evaluations per deterministic solver, EDM and VP side by side, from a report's JSON.

    ``python -c "from benchmarks.solvers import plot; plot('docs/performance.json', 'docs/img/solvers.png')"``
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(open(report_json).read())
    section = next(s for s in report["sections"] if s["id"] == "solvers")
    results = section["data"]["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, grid in zip(axes, ("edm", "vp")):
        for name, runs in results[grid]["deterministic"].items():
            ax.loglog([r["nfe"] for r in runs], [r["error"] for r in runs], marker="o", ms=3, label=name)
        ada = results[grid]["adaptive"]
        ax.loglog([r["nfe"] for r in ada], [r["error"] for r in ada], "k*--", label="dpm_adaptive (by tolerance)")
        ax.set_title(f"{grid.upper()} grid")
        ax.set_xlabel("network evaluations")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean distance to the converged ODE solution")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
