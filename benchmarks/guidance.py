"""Guidance: one batched call of the network against two calls, per guided evaluation.

Classifier-free guidance evaluates the conditional and the null branch at every step. When both
share the model and the conditions concatenate (a null condition tensor), ``ds.sample`` makes one
call on a batch of 2B; otherwise (``null_condition=None``: the model is called with
``condition=None``) it makes two calls of B. Both runs use the same backbone, latents and grid
(Heun, 8 steps); the ratio is batched / two calls (median of interleaved blocks of CPU time
[interquartile range]), and the time per guided evaluation is the run's time over its
evaluations of ``D``.
"""

from __future__ import annotations

import time

import torch

import diffusion_schemes as ds

from ._backbones import BACKBONES
from ._settings import Settings
from ._timing import compare, fmt_ratio, fmt_time

STEPS = 8


class Conditioned(torch.nn.Module):
    """A backbone whose output is shifted by a per-sample condition (a zero vector stands for "none")."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x, c_noise, condition=None):
        out = self.backbone(x, c_noise)
        if condition is None:
            return out
        return out + condition.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def _case(name: str, batch: int, settings: Settings) -> dict[str, object]:
    torch.manual_seed(0)
    cls, shape = BACKBONES[name]
    precond = ds.create("preconditioner", "edm", model=Conditioned(cls()))
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((batch, *shape), generator=torch.Generator().manual_seed(0))
    condition = torch.rand(batch, generator=torch.Generator().manual_seed(1))
    batched = ds.Guidance(2.0, null_condition=torch.zeros(1))
    two_calls = ds.Guidance(2.0)

    def run(guidance):
        return lambda: ds.sample(precond, latents, schedule, STEPS, condition=condition, guidance=guidance)

    with torch.no_grad():
        torch.testing.assert_close(run(batched)().samples, run(two_calls)().samples, rtol=1e-4, atol=1e-4)
        timing = compare(run(batched), run(two_calls), settings.repeats, settings.block_s, time.process_time)
    return {"backbone": name, "batch": batch, "evaluations": 2 * STEPS - 1, "timing": timing}


def run(settings: Settings) -> dict[str, object]:
    cases = [(name, batch) for name in BACKBONES for batch in ((1,) if settings.quick else (1, 64))]
    results = [_case(name, batch, settings) for name, batch in cases]
    rows = []
    for r in results:
        t, n = r["timing"], r["evaluations"]
        rows.append({"backbone": r["backbone"], "batch": str(r["batch"]),
                     "one batched call, per guided evaluation": fmt_time(t["ours_s"] / n),
                     "two calls, per guided evaluation": fmt_time(t["reference_s"] / n),
                     "batched / two calls [IQR]": fmt_ratio(t)})
    return {
        "id": "guidance",
        "title": "7. Guidance: one batched call against two",
        "description": (
            f"Classifier-free guidance (w = 2) with `ds.sample`, Heun, {STEPS} steps, EDM preconditioner around a "
            "conditioned backbone: a null condition tensor (one call on 2B samples per evaluation) against "
            "`null_condition=None` (two calls on B samples); same samples checked first. Ratio below 1: batching "
            "pays. Median of interleaved blocks of CPU time [interquartile range]."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "aims": [],
        "data": results,
    }
