"""What every invariant receives: the scheme under test, its spec, its paired schedule, and helpers.

The helpers compare tensors and, when they differ, describe the worst point with the values
seen, so each failure message can be read without rerunning anything.

>>> import torch
>>> from diffusion_schemes.conformance._context import compare, time_grid
>>> compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), "t", torch.tensor([0.1, 0.2]), rtol=1e-6)
'worst at t=0.2: got 2, expected 2.5 (relative error 0.2)'
>>> time_grid(1.0, 100.0, 5).tolist()
[1.0, 3.1622776601683795, 10.0, 25.75, 31.622776601683793, 50.5, 75.25, 100.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from diffusion_schemes.tensors import append_dims

__all__ = ["Context", "ProbeBackbone", "compare", "fmt", "time_grid"]


@dataclasses.dataclass
class Context:
    """The scheme being checked (``obj`` built from ``spec``), the options of ``check`` and shared state.

    ``schedule`` is the paired noise schedule (preconditioners and weightings); ``probe`` the
    backbone a preconditioner wraps; ``skip(reason)`` marks the running invariant as not applicable.
    """

    kind: str
    name: str
    spec: Any
    obj: Any
    options: dict[str, Any]
    schedule: Any = None
    probe: Any = None
    skipped: str | None = None

    def skip(self, reason: str) -> None:
        """Mark the running invariant as not applicable to this scheme (it is reported as skipped)."""
        self.skipped = reason

    @property
    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with the ``seed`` option (default 0)."""
        return torch.Generator().manual_seed(int(self.options.get("seed", 0)))


def time_grid(lo: float, hi: float, num: int = 65) -> torch.Tensor:
    """Sorted float64 times covering ``[lo, hi]`` evenly and (when ``lo > 0``) geometrically, ends included."""
    lin = torch.linspace(lo, hi, num, dtype=torch.float64)
    if lo > 0:
        lin = torch.cat([lin, torch.logspace(torch.log10(torch.tensor(lo, dtype=torch.float64)).item(),
                                             torch.log10(torch.tensor(hi, dtype=torch.float64)).item(),
                                             num, dtype=torch.float64)])
    grid = torch.unique(lin)
    keep = torch.ones_like(grid, dtype=torch.bool)
    keep[1:] = grid[1:] - grid[:-1] > 1e-9 * grid[1:].abs()
    grid = grid[keep]
    grid[0], grid[-1] = lo, hi
    return grid


def fmt(x: Any) -> str:
    """A number or a short tensor, printed compactly."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.numel() == 1:
            x = x.reshape(()).item()
        else:
            values = x.flatten()[:6].tolist()
            more = ", ..." if x.numel() > 6 else ""
            return "[" + ", ".join(f"{v:.6g}" for v in values) + more + "]"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def compare(
    got: torch.Tensor, want: torch.Tensor, label: str, where: torch.Tensor, rtol: float = 1e-5, atol: float = 0.0
) -> str | None:
    """``None`` when ``|got - want| <= atol + rtol |want|`` everywhere; else the worst point and its values."""
    got = torch.as_tensor(got).detach().to(torch.float64).cpu()
    want = torch.as_tensor(want).detach().to(torch.float64).cpu()
    got, want = torch.broadcast_tensors(got, want)
    where = torch.broadcast_to(torch.as_tensor(where).detach().to(torch.float64).cpu(), got.shape)
    bad_finite = torch.isfinite(want) & ~torch.isfinite(got)
    if bool(bad_finite.any()):
        i = int(bad_finite.flatten().nonzero()[0])
        at, g, w = where.flatten()[i], got.flatten()[i], want.flatten()[i]
        return f"not finite at {label}={fmt(at)}: got {fmt(g)}, expected {fmt(w)}"
    err = (got - want).abs()
    excess = err - (atol + rtol * want.abs())
    if not bool((excess > 0).any()):
        return None
    i = int(excess.flatten().argmax())
    g, w = got.flatten()[i], want.flatten()[i]
    rel = float(err.flatten()[i] / w.abs()) if float(w) != 0 else float("inf")
    return f"worst at {label}={fmt(where.flatten()[i])}: got {fmt(g)}, expected {fmt(w)} (relative error {rel:.3g})"


class ProbeBackbone(torch.nn.Module):
    """A deterministic stand-in for a network: ``F(x, c) = sin(x) + tanh(c)``; it records its last inputs.

    >>> import torch
    >>> probe = ProbeBackbone()
    >>> out = probe(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    >>> probe.seen_x.shape, probe.seen_c_noise.dtype
    (torch.Size([2, 3]), torch.float32)
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen_x: torch.Tensor | None = None
        self.seen_c_noise: torch.Tensor | None = None
        self.seen_condition: Any = None

    @staticmethod
    def reference(x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """The probe's output for these inputs (what the preconditioner's ``F`` returns)."""
        return torch.sin(x) + append_dims(torch.tanh(c_noise), x.ndim).to(x.dtype)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None, **kwargs: Any) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            self.seen_x, self.seen_c_noise, self.seen_condition = x, c_noise, condition
        return self.reference(x, c_noise)
