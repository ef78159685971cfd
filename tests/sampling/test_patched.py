"""``ds.Patched``: a denoiser evaluated on overlapping windows and averaged (MultiDiffusion, Bar-Tal et al. 2023).

The reference average is computed here with explicit loops over the windows, element by element.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError

SCHEDULE = ds.create("noise_schedule", "edm")
P = 8


class Pointwise(torch.nn.Module):
    """A backbone whose output at a position depends only on the input there (a 1x1 convolution)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, c_noise, condition=None):
        out = self.conv(x) * torch.cos(c_noise)[:, None, None, None]
        return out if condition is None else out + condition[:, None, None, None]


class FixedSize(torch.nn.Module):
    """A network that takes only P x P inputs and whose output depends on the position inside its window."""

    def __init__(self):
        super().__init__()
        self.position = torch.nn.Parameter(torch.linspace(-1, 1, 3 * P * P).reshape(3, P, P))

    def forward(self, x, c_noise, condition=None):
        if x.shape[-2:] != (P, P):
            raise ValueError(f"this network takes {P}x{P} inputs, got {tuple(x.shape[-2:])}")
        return 0.5 * x + self.position * torch.sigmoid(c_noise)[:, None, None, None]


def edm(backbone):
    return SCHEDULE.get_denoiser(x0_predictor=ds.create("preconditioner", "edm", model=backbone))


def latents(shape, seed=0):
    return SCHEDULE.init_latents(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m", "euler_ancestral"])
@pytest.mark.parametrize("overlap, random_offsets", [(0, False), (3, False), (2, True)])
def test_a_pointwise_network_samples_the_same_by_patches(solver, overlap, random_offsets):
    whole = edm(Pointwise())
    patched = ds.Patched(whole, P, overlap, random_offsets=random_offsets, generator=torch.Generator().manual_seed(1))
    x = latents((2, 3, 2 * P, 2 * P + 3))
    condition = torch.tensor([0.1, -0.2])
    kwargs = {"condition": condition, "generator": None}
    with torch.no_grad():
        plain = ds.sample(whole, x, SCHEDULE, 6, solver, **{**kwargs, "generator": torch.Generator().manual_seed(2)})
        by_patches = ds.sample(patched, x, SCHEDULE, 6, solver, **{**kwargs, "generator": torch.Generator().manual_seed(2)})
    torch.testing.assert_close(by_patches.samples, plain.samples, rtol=1e-5, atol=1e-5)
    assert by_patches.nfe == plain.nfe * patched.evaluations_per_call(x.shape)


def windows_average(model_fn, x, sigma, starts_h, starts_w):
    """The element-wise average over every window covering it, by explicit loops (float64)."""
    total = torch.zeros_like(x, dtype=torch.float64)
    count = torch.zeros(x.shape[-2:], dtype=torch.float64)
    for h in starts_h:
        for w in starts_w:
            out = model_fn(x[..., h:h + P, w:w + P], sigma).to(torch.float64)
            for i in range(P):
                for j in range(P):
                    total[..., h + i, w + j] += out[..., i, j]
                    count[h + i, w + j] += 1
    return total / count


def test_a_latent_twice_the_networks_size_samples_by_patches():
    net = FixedSize()
    whole = edm(net)
    x = latents((2, 3, 2 * P, 2 * P))
    with pytest.raises(ValueError, match="takes 8x8 inputs"):
        ds.sample(whole, x, SCHEDULE, 4)
    patched = ds.Patched(whole, P, overlap=4)  # windows at 0, 4, 8 in each direction
    sigma = torch.tensor(1.3)
    with torch.no_grad():
        got = patched.x0_sigma(x, sigma)
        want = windows_average(lambda v, s: whole.x0_sigma(v, s), x, sigma, [0, 4, 8], [0, 4, 8])
    torch.testing.assert_close(got.to(torch.float64), want, rtol=1e-6, atol=1e-6)
    result = ds.sample(patched, x, SCHEDULE, 5)
    assert result.samples.shape == x.shape and torch.isfinite(result.samples).all()
    assert result.nfe == 9 * 9  # 9 Heun evaluations of 9 patches each


def test_windows_cover_the_end_and_random_offsets_keep_their_number():
    patched = ds.Patched(edm(FixedSize()), P, overlap=2, random_offsets=True, generator=torch.Generator().manual_seed(3))
    seen = set()
    for _ in range(20):
        starts = patched._starts(21, P, P - 2)
        assert len(starts) == 5 and starts[0] == 0 and starts[-1] == 21 - P
        assert all(0 <= b - a <= P - 2 for a, b in itertools.pairwise(starts))  # no gap between windows
        seen.add(tuple(starts))
    assert len(seen) > 1  # the offsets move
    fixed = ds.Patched(edm(FixedSize()), P, overlap=2)
    assert fixed._starts(21, P, P - 2) == [0, 6, 12, 13] and fixed.evaluations_per_call((1, 3, 21, P)) == 4


def test_random_offsets_average_the_windows_they_drew():
    net = FixedSize()
    whole = edm(net)
    x = latents((1, 3, 13, 2 * P))
    sigma = torch.tensor(0.8)
    patched = ds.Patched(whole, P, overlap=3, random_offsets=True, generator=torch.Generator().manual_seed(4))
    replay = ds.Patched(whole, P, overlap=3, random_offsets=True, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = patched.x0_sigma(x, sigma)
        starts_h, starts_w = replay._starts(13, P, P - 3), replay._starts(2 * P, P, P - 3)
        want = windows_average(lambda v, s: whole.x0_sigma(v, s), x, sigma, starts_h, starts_w)
    torch.testing.assert_close(got.to(torch.float64), want, rtol=1e-6, atol=1e-6)


def test_nfe_counts_patches_under_guidance_and_posterior():
    whole = edm(Pointwise())
    patched = ds.Patched(whole, P, overlap=2)
    x = latents((2, 3, 2 * P, 2 * P))
    per_call = patched.evaluations_per_call(x.shape)
    plain = ds.sample(whole, x, SCHEDULE, 4, condition=torch.tensor([0.1, 0.2]), guidance=ds.Guidance(2.0, null_condition=torch.zeros(1)))
    guided = ds.sample(patched, x, SCHEDULE, 4, condition=torch.tensor([0.1, 0.2]), guidance=ds.Guidance(2.0, null_condition=torch.zeros(1)))
    torch.testing.assert_close(guided.samples, plain.samples, rtol=1e-5, atol=1e-5)
    assert plain.nfe == 14 and guided.nfe == 14 * per_call
    mask = torch.zeros_like(x)
    mask[..., ::3, ::2] = 1
    posterior = ds.Posterior(lambda v: v * mask, x * mask / 80, noise_std=0.1, method="pigdm")
    both = ds.sample(patched, x, SCHEDULE, 4, guidance=posterior)
    alone = ds.sample(whole, x, SCHEDULE, 4, guidance=posterior)
    torch.testing.assert_close(both.samples, alone.samples, rtol=1e-4, atol=1e-4)
    assert alone.nfe == 14 and both.nfe == 14 * per_call


def test_bad_arguments_are_refused():
    whole = edm(FixedSize())
    with pytest.raises(ArgumentTypeError, match="wraps a Denoiser"):
        ds.Patched(FixedSize(), P)
    with pytest.raises(InvalidArgumentError, match="0 <= overlap < patch_size"):
        ds.Patched(whole, P, overlap=-1)
    with pytest.raises(ArgumentTypeError, match="patch_size must be an int"):
        ds.Patched(whole, 2.5)
    with pytest.raises(InvalidArgumentError, match="smaller than patch_size"):
        ds.sample(ds.Patched(whole, P), latents((1, 3, P - 1, P)), SCHEDULE, 2)
    assert issubclass(InvalidArgumentError, ds.DiffusionSchemesError)
