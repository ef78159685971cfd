"""Figure 10: the CUDA section, run only when ``torch.cuda.is_available()``.

The overhead figure (1) on CUDA in float32 and bfloat16, with ``torch.cuda.synchronize()``
ending every timed call so a block measures the kernels, not their launch; and the sampler
loop as a CUDA graph: first ``ds.sample`` itself is captured (reported, as it builds its noise
levels on the CPU), then the Heun solver called with its noise levels already on the GPU,
captured once and replayed against eager ``ds.sample``.
"""

from __future__ import annotations

import torch

import diffusion_schemes as ds

from ._backbones import BACKBONES, InlineEDM, InlinePrecomputed, edm_coefficients
from ._settings import Settings
from ._timing import compare, fmt_ratio, fmt_time

AIM = 1.05


def _synced(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def _overhead(settings: Settings, dtype: torch.dtype) -> list[dict[str, object]]:
    rows = []
    for name, (cls, shape) in BACKBONES.items():
        for batch in (1, 64):
            torch.manual_seed(0)
            backbone = cls().cuda().to(dtype)
            ours = ds.create("preconditioner", "edm", model=backbone)
            pre, edm = InlinePrecomputed(backbone), InlineEDM(backbone)
            x = torch.randn(batch, *shape, device="cuda", dtype=dtype)
            sigma = torch.exp(torch.randn(batch, device="cuda") * 1.2 - 1.2)
            coeffs = [c.to(dtype) if c.ndim == x.ndim else c for c in edm_coefficients(sigma, x.ndim)]
            with torch.no_grad():
                vs_pre = compare(_synced(lambda: ours(x, sigma)), _synced(lambda: pre(x, *coeffs)),
                                 settings.repeats, settings.block_s)
                vs_edm = compare(_synced(lambda: ours(x, sigma)), _synced(lambda: edm(x, sigma)),
                                 settings.repeats, settings.block_s)
            rows.append({"backbone": name, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
                         "vs_precomputed": vs_pre, "vs_inline_edm": vs_edm})
    return rows


def _capture(fn):
    """Capture ``fn()`` as a CUDA graph (after two warm-up calls on a side stream); return (graph, output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def _graph(settings: Settings) -> dict[str, object]:
    """Capture the sampler loop: ``ds.sample`` itself, and the solver called with noise levels on the GPU."""
    torch.manual_seed(0)
    backbone = BACKBONES["conv net, 3x32x32"][0]().cuda()
    precond = ds.create("preconditioner", "edm", model=backbone)
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((64, 3, 32, 32), generator=torch.Generator().manual_seed(0)).cuda()
    solver = ds.create("solver", "heun")
    denoiser = schedule.get_denoiser(x0_predictor=precond)
    sigmas = schedule.sigmas(18).to("cuda", torch.float32)
    out: dict[str, object] = {}

    def eager():
        return ds.sample(precond, latents, schedule, 18, solver="heun").samples

    try:
        with torch.no_grad():
            _capture(eager)
        out["sample"] = "captured"
    except Exception as exc:  # noqa: BLE001 - reported in the table
        torch.cuda.synchronize()
        out["sample"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        with torch.no_grad():
            graph, static_out = _capture(lambda: solver(denoiser, latents, sigmas)[0])
    except Exception as exc:  # noqa: BLE001
        out["captured"] = False
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return out
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, eager(), rtol=1e-3, atol=1e-3)
    out["captured"] = True
    out["timing"] = compare(_synced(graph.replay), _synced(eager), settings.repeats, settings.block_s)
    return out


def run(settings: Settings) -> dict[str, object]:
    base = {"id": "gpu", "title": "10. CUDA"}
    if not torch.cuda.is_available():
        return {**base, "description": "not run: no GPU (`torch.cuda.is_available()` is False on this machine).",
                "columns": [], "rows": [], "aims": [], "data": {"run": False}}
    results = _overhead(settings, torch.float32) + _overhead(settings, torch.bfloat16)
    graph = _graph(settings)
    rows, misses = [], []
    for r in results:
        med = r["vs_precomputed"]["ratio"]["median"]
        if med > AIM:
            misses.append(f"{r['backbone']}, batch {r['batch']}, {r['dtype']}: {med:.2f}x")
        rows.append({"backbone": r["backbone"], "batch": str(r["batch"]), "dtype": r["dtype"],
                     "ours": fmt_time(r["vs_precomputed"]["ours_s"]),
                     "inline, precomputed": fmt_time(r["vs_precomputed"]["reference_s"]),
                     "ratio [IQR]": fmt_ratio(r["vs_precomputed"]),
                     "vs inline EDM [IQR]": fmt_ratio(r["vs_inline_edm"])})
    graph_text = f"Capturing `ds.sample` itself: {graph['sample']}. "
    if graph["captured"]:
        graph_text += (f"The Heun solver (18 steps, batch 64, conv net) called with its noise levels already on "
                       f"the GPU, captured as one CUDA graph: replay {fmt_time(graph['timing']['ours_s'])} against "
                       f"eager `ds.sample` {fmt_time(graph['timing']['reference_s'])}, ratio {fmt_ratio(graph['timing'])}.")
    else:
        graph_text += f"Capturing the solver with its noise levels on the GPU failed: {graph['error']}"
    return {**base,
            "description": f"{torch.cuda.get_device_name()}: the overhead figure on CUDA (synchronised blocks). "
                           + graph_text,
            "columns": list(rows[0]), "rows": rows,
            "aims": [{"aim": "forward within 5% of the inline formula (CUDA)", "met": not misses,
                      "detail": "; ".join(misses) or "all cases"},
                     {"aim": "the sampler loop captures as a CUDA graph", "met": graph["captured"],
                      "detail": graph.get("error", "the solver loop captured and replayed, output equal to eager")}],
            "data": {"run": True, "overhead": results, "cuda_graph": graph}}
