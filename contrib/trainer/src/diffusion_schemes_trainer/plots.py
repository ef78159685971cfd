"""Pictures of a run: samples (scatter for points, a grid for images), the loss curve, a comparison.

matplotlib comes with the ``plot`` extra. Without it the functions draw nothing and return
``None``, and the run says how to get the pictures.

>>> import os, tempfile, torch
>>> from diffusion_schemes_trainer.plots import loss_curve
>>> path = os.path.join(tempfile.mkdtemp(), "loss.png")
>>> loss_curve(path, [[10, 1.0], [20, 0.5]]) in (path, None)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .storage import write_atomically

__all__ = ["MISSING", "compare_curves", "guidance_picture", "loss_curve", "samples_picture", "uncertainty_curve"]

#: What to tell a user whose environment has no matplotlib.
MISSING = "pictures need matplotlib: pip install 'diffusion-schemes-trainer[plot]'"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _write(plt: Any, fig: Any, path: str) -> str:
    """Write ``fig`` to ``path`` atomically (a full disk leaves no empty picture behind) and free it."""
    target = Path(path)
    try:
        write_atomically(target, lambda fh: fig.savefig(fh, dpi=110, format=target.suffix.lstrip(".") or "png"),
                         what="the picture")
    finally:
        plt.close(fig)
    return path


def samples_picture(path: str, panels: Sequence[tuple[str, torch.Tensor]], kind: str = "points") -> str | None:
    """Side-by-side panels ``(title, samples)``: scatter plots of 2-D points, or grids of images."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    lim = None
    if kind == "points":
        lim = max(float(p.abs().quantile(0.995)) for _, p in panels) * 1.1
    for ax, (title, x) in zip(axes[0], panels):
        x = x.detach().float().cpu()
        if kind == "points":
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=1, alpha=0.4, linewidths=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        else:
            ax.imshow(_grid(x[:64]).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.axis("off")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _write(plt, fig, path)


def guidance_picture(path: str, rows: Sequence[tuple[str, torch.Tensor]], labels: torch.Tensor, kind: str = "points",
                     per_class: int = 3) -> str | None:
    """The same latents sampled at several guidance weights: one row (images) or panel (points) per weight.

    ``rows`` are ``(title, samples)`` drawn from the same latents and ``labels``. Images: the first
    ``per_class`` samples of every class, in class order, the same ones in every row. Points: all
    samples, coloured by the class they were asked for.
    """
    plt = _pyplot()
    if plt is None:
        return None
    labels = labels.cpu()
    if kind == "points":
        fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.8), squeeze=False)
        lim = max(float(x.abs().quantile(0.995)) for _, x in rows) * 1.1
        for ax, (title, x) in zip(axes[0], rows):
            x = x.detach().float().cpu()
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), c=labels.numpy(), cmap="tab10", s=2, alpha=0.6, linewidths=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(title, fontsize=10)
    else:
        picked = torch.cat([(labels == k).nonzero().flatten()[:per_class] for k in range(int(labels.max()) + 1)])
        fig, axes = plt.subplots(len(rows), 1, figsize=(0.45 * len(picked) + 1.2, 0.75 * len(rows) + 0.3), squeeze=False)
        for ax, (title, x) in zip(axes[:, 0], rows):
            strip = x.detach().float().cpu()[picked, 0].clamp(-1, 1)
            h, w = strip.shape[1:]
            canvas = torch.full((h, len(picked) * (w + 1) - 1), -1.0)
            for i, image in enumerate(strip):
                canvas[:, i * (w + 1) : i * (w + 1) + w] = image
            ax.imshow(canvas.numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return _write(plt, fig, path)


def _grid(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images tiled in a square grid (first channel), with a 1-pixel gap."""
    n, _, h, w = images.shape
    side = math.ceil(math.sqrt(n))
    grid = torch.full((side * (h + 1) - 1, side * (w + 1) - 1), -1.0)
    for i in range(n):
        r, c = divmod(i, side)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i, 0].clamp(-1, 1)
    return grid


def loss_curve(path: str, loss: Sequence[Sequence[float]]) -> str | None:
    """The training loss (``[step, mean loss]`` pairs) on a log scale, with a moving average."""
    plt = _pyplot()
    if plt is None or not loss:
        return None
    steps, values = zip(*loss)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, values, lw=0.8, alpha=0.4, label="mean over each logging interval")
    window = max(1, len(values) // 20)
    if window > 1:
        kernel = torch.ones(window) / window
        smooth = torch.nn.functional.conv1d(torch.tensor(values).view(1, 1, -1), kernel.view(1, 1, -1)).flatten()
        ax.plot(steps[window - 1 :], smooth.tolist(), lw=1.5, label=f"moving average of {window}")
        ax.legend()
    ax.set_yscale("log")
    return _save(plt, fig, ax, path, "step", "loss")


def compare_curves(path: str, runs: dict[str, Sequence[dict[str, float]]], floor: float | None = None,
                   measure: str = "sw") -> str | None:
    """A distance (``"sw"`` or ``"fd_digits"``) against training step, one line per scheme, with the floor dashed."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, curve in runs.items():
        points = [p for p in curve if p.get(measure) is not None]
        ax.plot([p["step"] for p in points], [p[measure] for p in points], marker="o", ms=3, label=name)
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label="floor (held-out vs held-out)")
    ax.set_yscale("log")
    ax.legend()
    ylabel = "sliced Wasserstein distance" if measure == "sw" else "fd_digits (Frechet distance, classifier features)"
    return _save(plt, fig, ax, path, "training step", ylabel)


def uncertainty_curve(path: str, curve: Sequence[Sequence[float]]) -> str | None:
    """The learned uncertainty ``u(sigma)`` (``[sigma, u]`` pairs) against the noise level, log-scaled."""
    plt = _pyplot()
    if plt is None or not curve:
        return None
    sigma, u = zip(*curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sigma, u, lw=1.5)
    ax.set_xscale("log")
    return _save(plt, fig, ax, path, "noise level sigma", "u(sigma) (log of the expected loss)")


def _save(plt: Any, fig: Any, ax: Any, path: str, xlabel: str, ylabel: str) -> str:
    """Label the axes, draw the grid, write ``path`` and free the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _write(plt, fig, path)
