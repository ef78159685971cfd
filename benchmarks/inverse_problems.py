"""``python -m benchmarks.inverse_problems``: each posterior method's error and cost on cases with a known posterior.

Prints the markdown table of ``docs/inverse-problems.md``. The cases (exact denoisers, float64):

- ``gaussian``: data ``N(mu, 0.8^2 I)`` in 3-D, ``y = A x0 + 0.3 eta`` with ``A`` of shape 2x3; the
  posterior is Gaussian in closed form. Errors: of the mean (Euclidean norm) and of the covariance
  (Frobenius norm relative to the exact one's).
- ``gaussian, noiseless``: the same with ``noise_std = 0``.
- ``mixture``: three Gaussians in 2-D, the first coordinate measured with noise 0.2; the posterior,
  enumerated over the components, puts no mass on one of them. Errors: sliced 1-Wasserstein
  distance to exact posterior samples (the floor: two exact sets), and the mass left in the
  excluded mode.

Every run: Heun, 32 steps on the EDM schedule, 4000 samples. Wall time on this machine's CPU,
one thread.
"""

from __future__ import annotations

import time

import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture
from diffusion_schemes.conformance.posterior import MixturePosterior, covariance_root, gaussian_posterior, sliced_w1

N, STEPS = 4000, 32
SCHEDULE = ds.create("noise_schedule", "edm")
MU = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
S = 0.8
A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7]], dtype=torch.float64)
Y = torch.tensor([[0.9, 1.6]], dtype=torch.float64)
DPS_SCALES = (0.1, 0.3, 1.0, 3.0)


def gaussian_x0(x, t):
    return MU + S**2 / (S**2 + t[:, None] ** 2) * (x - MU)


def methods(data_std):
    yield "prior (no guidance)", None
    yield "PiGDM", {"method": "pigdm", "data_std": data_std}
    for scale in DPS_SCALES:
        yield f"DPS, scale {scale:g}", {"method": "dps", "scale": scale}


def run(model, latents, operator, y, noise_std, options):
    guidance = None if options is None else ds.Posterior(operator, y, noise_std, **options)
    start = time.perf_counter()
    result = ds.sample(model, latents, SCHEDULE, STEPS, guidance=guidance)
    return result, time.perf_counter() - start


def gaussian_rows(noise_std):
    mean, cov = gaussian_posterior(MU, S**2 * torch.eye(3, dtype=torch.float64), A, Y[0], noise_std)
    latents = SCHEDULE.init_latents((N, 3), generator=torch.Generator().manual_seed(0)).to(torch.float64)
    exact = mean + torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) @ covariance_root(cov).T
    rows = [["exact posterior samples (floor)", "", "", f"{float((exact.mean(0) - mean).norm()):.3f}",
             f"{float((exact.T.cov() - cov).norm() / cov.norm()):.3f}"]]
    run(gaussian_x0, latents[:8], lambda x: x @ A.T, Y, noise_std, {"method": "pigdm"})  # warm-up, not timed
    for name, options in methods(S):
        result, seconds = run(gaussian_x0, latents, lambda x: x @ A.T, Y, noise_std, options)
        x = result.samples
        rows.append([name, result.nfe, f"{seconds:.2f}", f"{float((x.mean(0) - mean).norm()):.3f}",
                     f"{float((x.T.cov() - cov).norm() / cov.norm()):.3f}"])
    return rows


def mixture_rows():
    mixture = GaussianMixture([[-1.0, 1.0], [1.0, -1.0], [1.2, 1.0]], [0.3, 0.3, 0.3], [0.5, 0.3, 0.2])
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y, noise_std = torch.tensor([[1.1]], dtype=torch.float64), 0.2
    exact = MixturePosterior(mixture, a, y[0], noise_std)
    reference = exact.sample(N, torch.Generator().manual_seed(1))
    floor = sliced_w1(exact.sample(N, torch.Generator().manual_seed(2)), reference, generator=torch.Generator().manual_seed(0))
    latents = SCHEDULE.init_latents((N, 2), generator=torch.Generator().manual_seed(3)).to(torch.float64)
    std = float(mixture.sample(20000, torch.Generator().manual_seed(4)).std())
    rows = [["exact posterior samples (floor)", "", "", f"{floor:.3f}", f"{float(exact.weights[0]):.4f}"]]
    for name, options in methods(std):
        result, seconds = run(ExactX0(mixture, SCHEDULE), latents, lambda x: x @ a.T, y, noise_std, options)
        w1 = sliced_w1(result.samples, reference, generator=torch.Generator().manual_seed(0))
        rows.append([name, result.nfe, f"{seconds:.2f}", f"{w1:.3f}", f"{float(exact.nearest_weights(result.samples)[0]):.4f}"])
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def main() -> None:
    torch.set_num_threads(1)
    header = ["method", "nfe", "seconds", "mean error", "covariance error (relative)"]
    print("Gaussian data, noise_std 0.3\n")
    print(table(header, gaussian_rows(0.3)))
    print("\nGaussian data, noiseless\n")
    print(table(header, gaussian_rows(0.0)))
    print("\nGaussian mixture, noise_std 0.2\n")
    print(table(["method", "nfe", "seconds", "sliced W1", "mass in the excluded mode (exact: weight)"], mixture_rows()))


if __name__ == "__main__":
    main()
