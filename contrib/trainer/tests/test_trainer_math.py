"""The trainer's numbers: the mixture's density, score and exact denoiser, the sliced Wasserstein
distance and the data sets, each against an independent derivation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from diffusion_schemes_trainer import Checkerboard, GaussianMixture, MixtureData, TwoMoons, sliced_wasserstein

MEANS = [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]]
STDS = [0.1, 0.3, 0.6]
WEIGHTS = [1.0, 2.0, 1.0]


def reference(sigma: float) -> D.MixtureSameFamily:
    """The noisy mixture built with torch.distributions: N(mu_k, (s_k^2 + sigma^2) I), weights normalised."""
    std = (torch.tensor(STDS, dtype=torch.float64) ** 2 + sigma**2).sqrt()
    comps = D.Independent(D.Normal(torch.tensor(MEANS, dtype=torch.float64), std[:, None].expand(3, 2)), 1)
    return D.MixtureSameFamily(D.Categorical(probs=torch.tensor(WEIGHTS, dtype=torch.float64) / 4), comps)


@pytest.fixture
def gm():
    return GaussianMixture(MEANS, STDS, WEIGHTS)


@pytest.fixture
def points():
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.7, 20.0])
def test_log_prob_is_the_noisy_mixture_density(gm, points, sigma):
    torch.testing.assert_close(gm.log_prob(points, sigma), reference(sigma).log_prob(points), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 5.0])
def test_score_is_the_gradient_of_the_log_density(gm, points, sigma):
    x = points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reference(sigma).log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(points, sigma), grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 80.0])
def test_exact_denoiser_is_tweedies_posterior_mean(gm, points, sigma):
    # E[x0 | x] = x + sigma^2 grad log p_sigma(x) (Tweedie), with the gradient by autograd
    x = points.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reference(sigma).log_prob(x).sum(), x)
    torch.testing.assert_close(gm.denoise(points, sigma), points + sigma**2 * grad, rtol=1e-9, atol=1e-9)


def test_exact_denoiser_takes_one_noise_level_per_sample(gm, points):
    sigmas = torch.linspace(0.05, 3.0, points.shape[0], dtype=torch.float64)
    rows = torch.stack([gm.denoise(points[i : i + 1], float(s))[0] for i, s in enumerate(sigmas)])
    torch.testing.assert_close(gm.denoise(points, sigmas), rows)


def test_exact_denoiser_at_huge_noise_gives_the_data_mean(gm):
    mean = (torch.tensor(WEIGHTS, dtype=torch.float64)[:, None] * torch.tensor(MEANS, dtype=torch.float64)).sum(0) / 4
    out = gm.denoise(torch.zeros(1, 2, dtype=torch.float64), 1e6)
    torch.testing.assert_close(out[0], mean, rtol=0, atol=1e-6)


def test_samples_have_the_mixture_moments(gm):
    x = gm.sample(200_000, torch.Generator().manual_seed(0)).double()
    ref = reference(0.0)
    torch.testing.assert_close(x.mean(0), ref.mean, rtol=0, atol=0.01)
    torch.testing.assert_close(x.var(0), ref.variance, rtol=0.02, atol=0)
    assert gm.std() == pytest.approx(float(ref.variance.mean().sqrt()), rel=1e-12)


def test_default_ring_has_the_edm_sigma_data():
    from diffusion_schemes_trainer import load_config

    data = load_config().data.build()
    # 8 blobs on a circle of radius r: per-coordinate variance r^2 / 2 + s^2
    assert data.mixture.std() == pytest.approx(math.sqrt(0.7**2 / 2 + 0.07**2), rel=1e-12)
    assert data.mixture.std() == pytest.approx(0.5, abs=1e-3)


def test_sliced_wasserstein_of_a_shift_in_one_dimension_is_the_shift():
    x = torch.randn(300, 1, generator=torch.Generator().manual_seed(0))
    assert float(sliced_wasserstein(x, x + 0.7, projections=8)) == pytest.approx(0.7, rel=1e-6)


def test_sliced_wasserstein_of_a_shift_averages_over_directions():
    # SW_2^2 of a shift m in d dimensions is E[(theta . m)^2] = |m|^2 / d for theta uniform on the sphere
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    m = torch.tensor([0.3, -1.2, 0.5])
    value = float(sliced_wasserstein(x, x + m, projections=20_000))  # Monte Carlo: relative sd 0.3%
    assert value == pytest.approx(float(m.norm()) / math.sqrt(3), rel=0.015)


def test_sliced_wasserstein_ignores_order_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 1
    perm = torch.randperm(100, generator=g)
    assert float(sliced_wasserstein(x, y)) == pytest.approx(float(sliced_wasserstein(y[perm], x)), rel=1e-12)
    assert float(sliced_wasserstein(x, x[perm])) == 0.0


def test_sliced_wasserstein_needs_equal_sizes():
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(4, 2))


def test_two_moons_lie_on_their_circles():
    x = TwoMoons(noise=0.0).sample(2000, torch.Generator().manual_seed(0)).double() + torch.tensor([0.5, 0.25])
    upper = (x.norm(dim=1) - 1).abs() < 1e-5
    lower = ((x - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs() < 1e-5
    assert bool((upper | lower).all())
    assert 0.45 < float(upper.double().mean()) < 0.55


def test_checkerboard_fills_only_dark_squares_evenly():
    x = Checkerboard(squares=4, size=4.0).sample(40_000, torch.Generator().manual_seed(0))
    cells = torch.floor(x + 2).long()
    assert bool(((cells >= 0) & (cells < 4)).all())
    assert bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).double()
    dark = counts[counts > 0]
    assert len(dark) == 8 and float(dark.std() / dark.mean()) < 0.05


def test_splits_are_reproducible_and_independent():
    data = MixtureData(MEANS, STDS, WEIGHTS)
    a, b = data.splits(100, 50, seed=3), data.splits(100, 50, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.eval_a, a.eval_b)
    assert not torch.equal(a.train[:50], a.eval_a)


def test_digits_are_scaled_images_split_without_overlap():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from diffusion_schemes_trainer import Digits

    s = Digits().splits(train_size=10_000, eval_size=100, seed=0)
    assert s.train.shape == (1797 - 200, 1, 8, 8) and s.eval_a.shape == s.eval_b.shape == (100, 1, 8, 8)
    # the three splits are the whole set, each image once, pixel values 0..16 mapped to [-1, 1]
    expected = torch.as_tensor(load_digits().data, dtype=torch.float64) / 8 - 1
    got = torch.cat([s.train, s.eval_a, s.eval_b]).reshape(-1, 64).double()
    key = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert key(got) == key(expected)


def test_backbones_are_diffusion_models_of_the_data_shape():
    import diffusion_schemes as ds
    from diffusion_schemes_trainer import MLP, ConvNet

    for net, shape in ((MLP(dim=2, hidden=8), (5, 2)), (MLP(dim=64, hidden=8), (5, 1, 8, 8)),
                       (ConvNet(1, channels=8, blocks=1), (5, 1, 8, 8))):
        assert isinstance(net, ds.DiffusionModel)
        x = torch.randn(shape)
        assert torch.equal(net(x, torch.rand(5)), torch.zeros(shape))  # output layers start at zero
        with pytest.raises(ValueError, match="unconditional"):
            net(x, torch.rand(5), condition=torch.zeros(5, 3))


def test_noise_embedding_is_fourier_features_over_the_period_range():
    from diffusion_schemes_trainer import NoiseEmbedding

    emb = NoiseEmbedding(frequencies=4, min_period=0.5, max_period=4000.0)
    c = torch.tensor([0.0, 0.3, 999.0])
    periods = 4000.0 * (0.5 / 4000.0) ** (torch.arange(4, dtype=torch.float64) / 3)
    angle = 2 * math.pi * c.double()[:, None] / periods
    # the angle is formed in float32: its rounding, about |angle| * eps32, bounds the error
    atol = 2 * float(angle.abs().max()) * torch.finfo(torch.float32).eps
    torch.testing.assert_close(emb(c).double(), torch.cat([angle.cos(), angle.sin()], 1), rtol=0, atol=atol)
