"""Figure 1: the preconditioner's forward against the same affine formula written inline.

Ours: ``EDMPreconditioner`` built by name around a backbone, called ``precond(x, sigma)``.
References: ``InlinePrecomputed`` (coefficients computed before the timed call: the
cheapest possible wrapper) and ``InlineEDM`` (Table 1's coefficients computed inline, as a
user writes it without this library). Both share the backbone's weights; outputs are
checked equal before timing. Inference (``torch.no_grad``), eager and ``torch.compile``.
"""

from __future__ import annotations

import torch

import diffusion_schemes as ds

from ._backbones import BACKBONES, InlineEDM, InlinePrecomputed, edm_coefficients
from ._settings import Settings
from ._timing import compare, fmt_ratio, fmt_time

AIM = 1.05


def _case(name: str, batch: int, compiled: bool, settings: Settings) -> dict[str, object]:
    torch.manual_seed(0)
    cls, shape = BACKBONES[name]
    backbone = cls()
    ours = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.5}, model=backbone)
    pre = InlinePrecomputed(backbone)
    edm = InlineEDM(backbone)
    x = torch.randn(batch, *shape)
    sigma = torch.exp(torch.randn(batch) * 1.2 - 1.2)
    coeffs = edm_coefficients(sigma, x.ndim)
    if compiled:
        kw = {"backend": settings.backend, "fullgraph": True, "dynamic": False}
        ours, pre, edm = torch.compile(ours, **kw), torch.compile(pre, **kw), torch.compile(edm, **kw)
    with torch.no_grad():
        want = pre(x, *coeffs)
        for got in (ours(x, sigma), edm(x, sigma)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        vs_pre = compare(lambda: ours(x, sigma), lambda: pre(x, *coeffs), settings.repeats, settings.block_s)
        vs_edm = compare(lambda: ours(x, sigma), lambda: edm(x, sigma), settings.repeats, settings.block_s)
    return {"backbone": name, "batch": batch, "mode": "compiled" if compiled else "eager",
            "vs_precomputed": vs_pre, "vs_inline_edm": vs_edm}


def run(settings: Settings) -> dict[str, object]:
    results = []
    for compiled in (False, True):
        for name in BACKBONES:
            for batch in (1, 64):
                results.append(_case(name, batch, compiled, settings))
    rows, misses = [], []
    for r in results:
        med = r["vs_precomputed"]["ratio"]["median"]
        extra = r["vs_precomputed"]["ours_s"] - r["vs_precomputed"]["reference_s"]
        met = med <= AIM
        if not met:
            misses.append(f"{r['backbone']}, batch {r['batch']}, {r['mode']}: {med:.2f}x ({extra * 1e6:+.1f} us per call)")
        rows.append({
            "backbone": r["backbone"], "batch": str(r["batch"]), "mode": r["mode"],
            "ours": fmt_time(r["vs_precomputed"]["ours_s"]),
            "inline, precomputed": fmt_time(r["vs_precomputed"]["reference_s"]),
            "ratio [IQR]": fmt_ratio(r["vs_precomputed"]),
            "vs inline EDM [IQR]": fmt_ratio(r["vs_inline_edm"]),
            "aim <= 1.05": "met" if met else f"missed by {(med - AIM) * 100:.0f} points",
        })
    def extra_us(r, key):
        return (r[key]["ours_s"] - r[key]["reference_s"]) * 1e6

    tiny = next(r for r in results if r["batch"] == 1 and r["mode"] == "eager" and "MLP" in r["backbone"])
    notes = [
        "Why the small cases miss: the preconditioner computes its four coefficients from sigma on every call "
        "(EDM's formulas are about fifteen elementwise operations on a (B, 1) tensor, each a dispatcher call of "
        "a few microseconds on the CPU), while the precomputed reference does three multiplications and an add. "
        f"Tiny MLP, batch 1, eager: ours costs {extra_us(tiny, 'vs_precomputed'):+.0f} us per call against the "
        f"precomputed formula but {extra_us(tiny, 'vs_inline_edm'):+.0f} us against EDM written inline, which "
        "pays for the same coefficients: the difference between the two columns is the price of the formula, "
        "and the inline-EDM column is what the library itself adds (argument checks, the noise-level domain "
        "check on the CPU, reshaping c_noise). Where the backbone does real work (conv net, batch 64) the "
        "coefficients vanish in its cost; compiled, they fuse into the backbone's kernels.",
        "Changed after profiling: the domain check of the noise levels runs on the tensor's device "
        "(`diffusion_schemes.tensors.check_inside`: a clamp, a comparison and a reduction ending in "
        "`torch._assert_async`, no host read, so no device synchronisation), dtype casts are skipped when the dtype "
        "already matches, and EDM's coefficients share one `rsqrt` and use `square()` (a Python-side `**` goes "
        "through an extra wrapper). Section 0 sets the same forward against EDM written inline, the aim.",
    ]
    return {
        "notes": notes,
        "id": "overhead",
        "title": "1. Preconditioner overhead (forward, inference)",
        "description": (
            "`EDMPreconditioner` (built with `ds.create`) around a backbone, against the affine formula "
            "with the coefficients precomputed outside the timed call, and against EDM written inline "
            "(coefficients from sigma inside the call). Ratio = ours / reference, median of interleaved "
            f"blocks [interquartile range]. Compiled: `torch.compile(fullgraph=True, dynamic=False)`, "
            f"{settings.backend_note}."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "aims": [{"aim": "forward within 5% of the inline formula with precomputed coefficients",
                  "met": not misses, "detail": "; ".join(misses) or "all cases"}],
        "data": results,
    }
