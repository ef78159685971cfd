"""Figure 3: the preconditioned forward, the loss and one solver step under ``torch.compile``.

For each: graph breaks (``torch._dynamo.explain``; must be 0, and ``fullgraph=True`` must
compile), the number of compilations while the batch size changes (4, 8, 16, 32) and while
``t`` changes at a fixed shape (a counting backend, ``torch._dynamo.testing.CompileCounter``),
and the compiled-to-eager time ratio (interleaved blocks, median [interquartile range]).
"""

from __future__ import annotations

import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

import diffusion_schemes as ds

from ._backbones import BACKBONES, SmallConvNet
from ._settings import Settings
from ._timing import compare, fmt_ratio, fmt_time

BATCHES = (4, 8, 16, 32)
TIMES = (0.1, 0.7, 3.0, 20.0)


def _parts(backbone_name: str):
    torch.manual_seed(0)
    cls, shape = BACKBONES[backbone_name]
    backbone = cls()
    precond = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.5}, model=backbone)
    schedule = ds.create("noise_schedule", "edm")
    loss_fn = ds.MSEDSMLoss(precond, schedule)
    denoiser = schedule.get_denoiser(x0_predictor=precond)
    solvers = {name: ds.create("solver", name) for name in ("heun", "dpmpp_2m", "edm_stochastic_heun")}

    def forward(x, t):
        return precond(x, t)

    def loss_step(x0, t, noise):
        return loss_fn(x0, t=t, noise=noise)

    def heun_step(x, t):
        return solvers["heun"].step(denoiser, x, t, t * 0.8)[0]

    def dpm_step(x, t):  # a first step: the state start() gives for its grid
        solver = solvers["dpmpp_2m"]
        return solver.step(denoiser, x, t, t * 0.8, solver.start(torch.stack([t, t * 0.8])))[0]

    def stochastic_step(x, t):
        solver = solvers["edm_stochastic_heun"]
        return solver.step(denoiser, x, t, t * 0.8, solver.churn(18), torch.randn_like(x))[0]

    def args(name, batch, t):
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, *shape, generator=g)
        if name == "forward":
            return x, torch.full((batch,), t)
        if name == "loss (forward)":
            return x * 0.5, torch.full((batch,), t), torch.randn(x.shape, generator=g)
        return x, torch.tensor(t)

    fns = {"forward": forward, "loss (forward)": loss_step, "heun step": heun_step, "dpmpp_2m step": dpm_step,
           "edm_stochastic_heun step": stochastic_step}
    return fns, args


def _count_compiles(fn, calls) -> int:
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    with torch.no_grad():
        for a in calls:
            compiled(*a)
    return counter.frame_count


def _train_step(settings: Settings, args):
    """Loss forward + backward: eager against compiled, same inputs."""
    torch.manual_seed(0)
    backbone = SmallConvNet()
    precond = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.5}, model=backbone)
    loss_fn = ds.MSEDSMLoss(precond, ds.create("noise_schedule", "edm"))
    compiled = torch.compile(loss_fn, backend=settings.backend, fullgraph=True, dynamic=False)
    x0, t, noise = args("loss (forward)", 16, 1.0)

    def step(fn):
        def run():
            for p in backbone.parameters():
                p.grad = None
            fn(x0, t=t, noise=noise).backward()
        return run

    return compare(step(compiled), step(loss_fn), settings.repeats, settings.block_s)


def run(settings: Settings) -> dict[str, object]:
    fns, args = _parts("conv net, 3x32x32")
    mlp_fns, mlp_args = _parts("tiny MLP, 2-D")
    results = {}
    for name, fn in fns.items():
        torch._dynamo.reset()
        with torch.no_grad():
            explained = torch._dynamo.explain(fn)(*args(name, 8, 1.0))
        batches, times = (BATCHES[:2], TIMES[:2]) if settings.quick else (BATCHES, TIMES)
        by_batch = _count_compiles(fn, [args(name, b, 1.0) for b in batches])
        by_batch_mlp = _count_compiles(mlp_fns[name], [mlp_args(name, b, 1.0) for b in batches])
        by_time = _count_compiles(fn, [args(name, 8, t) for t in times])
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend=settings.backend, fullgraph=True, dynamic=False)
        a = args(name, 16, 1.0)
        with torch.no_grad():
            if name != "edm_stochastic_heun step":  # draws its own noise: outputs differ by design
                torch.testing.assert_close(compiled(*a), fn(*a), rtol=1e-4, atol=1e-4)
            timing = compare(lambda: compiled(*a), lambda: fn(*a), settings.repeats, settings.block_s)
        results[name] = {"graph_breaks": explained.graph_break_count, "graphs": explained.graph_count,
                         "break_reasons": [str(r.reason) for r in explained.break_reasons],
                         "compiles_batch_changes": by_batch, "compiles_batch_changes_mlp": by_batch_mlp, "compiles_t_changes": by_time, "timing": timing}
    torch._dynamo.reset()
    results["loss (forward + backward)"] = {"timing": _train_step(settings, args)}
    rows, breaks, recompiles = [], [], []
    for name, r in results.items():
        if r.get("graph_breaks"):
            breaks.append(f"{name}: {r['graph_breaks']} ({'; '.join(r['break_reasons'])})")
        if "compiles_t_changes" in r and r["compiles_t_changes"] > 1:
            recompiles.append(f"{name}: {r['compiles_t_changes']} compilations for {len(TIMES)} values of t")
        rows.append({
            "code": name,
            "graph breaks": str(r.get("graph_breaks", "-")),
            f"compilations, batch {'/'.join(map(str, BATCHES))}: MLP, conv": (
                f"{r['compiles_batch_changes_mlp']}, {r['compiles_batch_changes']}" if "graphs" in r else "-"),
            f"compilations, {len(TIMES)} values of t": str(r.get("compiles_t_changes", "-")),
            "eager": fmt_time(r["timing"]["reference_s"]),
            "compiled": fmt_time(r["timing"]["ours_s"]),
            "compiled / eager [IQR]": fmt_ratio(r["timing"]),
        })
    return {
        "id": "compilation",
        "title": "3. Compilation",
        "description": (
            "`torch.compile(fullgraph=True)` of the EDM-preconditioned conv net's forward, `MSEDSMLoss` and one "
            "step of three solvers (the denoiser is `schedule.get_denoiser(x0_predictor=precond)`; t is a "
            "0-d tensor for the steps, `(B,)` for the forward and loss). Graph breaks from "
            "`torch._dynamo.explain`. Compilations counted with a counting backend under the default dynamic "
            "setting, with the tiny MLP and with the conv net: a second batch size recompiles once with a dynamic "
            "batch dimension (PyTorch's automatic dynamic shapes), later sizes reuse it. The conv net's third "
            "compilation comes from torch's own `conv2d` (its CPU fake implementation guards `batch <= 15` to pick "
            "an algorithm; `TORCH_LOGS=recompiles` shows it), not from this library. t is a tensor, so new values "
            "of t reuse the graph. "
            f"Timing at batch 16, {settings.backend_note}; ratio = compiled / eager, median of interleaved blocks "
            "[interquartile range]."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "aims": [
            {"aim": "0 graph breaks under fullgraph=True", "met": not breaks, "detail": "; ".join(breaks) or "none"},
            {"aim": "no recompilation when t changes", "met": not recompiles,
             "detail": "; ".join(recompiles) or "one compilation each"},
            {"aim": "a changing batch size compiles at most twice (static, then dynamic batch; tiny MLP)",
             "met": all(r.get("compiles_batch_changes_mlp", 0) <= 2 for r in results.values()),
             "detail": ", ".join(f"{n}: {r['compiles_batch_changes_mlp']}" for n, r in results.items()
                                 if "compiles_batch_changes_mlp" in r)},
        ],
        "data": results,
    }
