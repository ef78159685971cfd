"""``python -m benchmarks.inverse_digits RUN``: reconstruct held-out digits from measurements with a trained model.

The worked example of ``docs/inverse-problems.md``. ``RUN`` is a run directory of
``diffusion-schemes train --data digits`` (the model is rebuilt from its checkpoint, EMA weights, the
way ``diffusion-schemes sample`` does). The ground truth is the first images of the run's held-out
set B (never trained on); two problems measure them:

- ``inpaint``: a quarter of the pixels (16 of 64, a different random choice per image), exactly
  (``noise_std=0``); the operator gathers those pixels;
- ``deblur``: every pixel blurred by a fixed Gaussian kernel (std ``BLUR_STD`` pixels, a 64x64 matrix
  whose rows are the kernel renormalised inside the image) plus Gaussian noise of std 0.1.

Each problem is sampled with ``ds.Posterior(..., method="dps")`` (at each of ``--dps-scales``) and
``method="pigdm"`` (``data_std``: the training images' standard deviation), Heun on the run's
schedule, ``SAMPLES`` posterior samples per image from the same latents. Printed: the per-pixel RMSE to the truth of one sample (averaged over
the samples), of the mean of the samples, and of the naive reconstruction (the measured pixels with the
training mean elsewhere; the blurred image itself), with nfe and wall time. Drawn: one picture per
problem (rows: truth, measurement, DPS at each scale, PiGDM; first sample of each image).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import diffusion_schemes as ds

ROOT = Path(__file__).resolve().parent.parent
IMAGES, SAMPLES, STEPS = 8, 4, 32
KEPT = 16                       # pixels measured out of 64: a quarter
BLUR_STD, BLUR_NOISE = 1.0, 0.1


def blur_matrix(side: int = 8, std: float = BLUR_STD) -> torch.Tensor:
    """A ``side^2 x side^2`` Gaussian blur: row i weighs pixel j by ``exp(-|p_i - p_j|^2 / (2 std^2))``, summing to 1."""
    ij = torch.cartesian_prod(torch.arange(side), torch.arange(side)).double()
    weights = torch.exp(-torch.cdist(ij, ij) ** 2 / (2 * std**2))
    return (weights / weights.sum(1, keepdim=True)).float()


def problems(truth: torch.Tensor, train_mean: torch.Tensor, generator: torch.Generator) -> dict[str, dict]:
    """Each problem's operator on a batch of ``len(truth) * SAMPLES`` latents, measurement and naive reconstruction."""
    n = truth.shape[0]
    flat = truth.flatten(1)
    # inpainting: per image, the indices of its KEPT measured pixels
    kept = torch.stack([torch.randperm(64, generator=generator)[:KEPT] for _ in range(n)])
    kept_rep = kept.repeat_interleave(SAMPLES, 0)
    seen = torch.full_like(flat, float("nan")).scatter(1, kept, flat.gather(1, kept))
    naive = torch.where(seen.isnan(), train_mean.flatten()[None], seen)
    # deblurring: a fixed matrix, then noise
    blur = blur_matrix()
    blurred = flat @ blur.T + BLUR_NOISE * torch.randn(flat.shape, generator=generator)
    return {
        "inpaint": {"operator": lambda x: x.flatten(1).gather(1, kept_rep), "measurement": flat.gather(1, kept),
                    "noise_std": 0.0, "shown": seen, "naive": naive,
                    "caption": f"{KEPT} of 64 pixels"},
        "deblur": {"operator": lambda x: x.flatten(1) @ blur.T, "measurement": blurred,
                   "noise_std": BLUR_NOISE, "shown": blurred, "naive": blurred,
                   "caption": f"blurred (std {BLUR_STD:g} px) + noise {BLUR_NOISE:g}"},
    }


def rmse(x: torch.Tensor, truth: torch.Tensor) -> float:
    """Per-pixel root mean squared error over all images."""
    return float((x.flatten(1) - truth.flatten(1)).pow(2).mean().sqrt())


def picture(path: Path, title: str, rows: list[tuple[str, torch.Tensor]]) -> None:
    """One row of 8x8 images per entry; NaN pixels (not measured) drawn in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="tab:blue")
    cols = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.2, 1.15 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[c].reshape(8, 8).numpy(), cmap=cmap, vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inverse_digits", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of `diffusion-schemes train --data digits`")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the two pictures")
    parser.add_argument("--dps-scales", type=lambda v: [float(s) for s in v.split(",")], default=[1.0, 10.0],
                        help="DPS's step sizes zeta' (Posterior's scale), comma-separated; one row each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from diffusion_schemes_trainer import load_checkpoint
    from diffusion_schemes_trainer.runs import rebuild

    config, precond, schedule = rebuild(load_checkpoint(args.run))  # EMA weights; sets the run's threads
    if config.data.name != "digits":
        parser.error(f"{args.run} was trained on {config.data.name!r}, not digits")
    precond.requires_grad_(False)  # the posterior differentiates with respect to the latent only
    splits = config.data.build().splits(config.data.train_size, config.data.eval_size, config.seed)
    truth = splits.eval_b[:IMAGES]
    data_std = float(splits.train.std())
    generator = torch.Generator().manual_seed(args.seed)
    cases = problems(truth, splits.train.mean(0), generator)
    latents = schedule.init_latents((IMAGES * SAMPLES, *truth.shape[1:]), generator=generator)
    repeated = truth.repeat_interleave(SAMPLES, 0)
    print(f"run {args.run}: {IMAGES} held-out digits, {SAMPLES} samples each, Heun {STEPS} steps, "
          f"PiGDM data_std {data_std:.3f}, {torch.get_num_threads()} threads\n")
    print("| problem | method | nfe | seconds | RMSE of a sample | RMSE of the mean of "
          f"{SAMPLES} |\n|---|---|---|---|---|---|")
    for name, case in cases.items():
        print(f"| {name} | naive reconstruction |  |  | {rmse(case['naive'], truth):.3f} |  |")
        measurement = case["measurement"].repeat_interleave(SAMPLES, 0)
        drawn = [("truth", truth.flatten(1)), ("measured", case["shown"])]
        methods = [("dps", f"DPS, scale {w:g}", {"scale": w}) for w in args.dps_scales]
        for method, label, options in [*methods, ("pigdm", "PiGDM", {"data_std": data_std})]:
            posterior = ds.Posterior(case["operator"], measurement, noise_std=case["noise_std"], method=method,
                                     **options)
            start = time.perf_counter()
            result = ds.sample(precond, latents, schedule, STEPS, solver="heun", guidance=posterior)
            seconds = time.perf_counter() - start
            samples = result.samples.detach()
            mean = samples.reshape(IMAGES, SAMPLES, -1).mean(1)
            print(f"| {name} | {label} | {result.nfe} | {seconds:.1f} | {rmse(samples, repeated):.3f} | "
                  f"{rmse(mean, truth):.3f} |")
            drawn.append((label.replace(", scale ", "\nscale "), samples[::SAMPLES].flatten(1)))
        out = args.out / f"inverse-digits-{name}.png"
        picture(out, f"{name}: {case['caption']}", drawn)
        print(f"|  | written: {out} |  |  |  |  |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
