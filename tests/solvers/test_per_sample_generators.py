"""One generator per sample: a sample's noise depends on its own generator, not on the batch it is drawn in."""

from __future__ import annotations

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError
from diffusion_schemes.solvers import default_noise_sampler
from diffusion_schemes.solvers.noise_samplers import check_generator, normal_noise

#: The solvers that draw noise at their steps, with the fixed grid (dpm_adaptive picks its steps from an error
#: measured over the whole batch, so its samples depend on the batch by design).
STOCHASTIC = [i.name for i in ds.list_schemes("solver")
              if ds.create("solver", i.name).stochastic and not ds.create("solver", i.name).adaptive]


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def gaussian_x0(x, t):
    """The ideal denoiser of N(0, 0.5^2 I) data under EDM (t = sigma): elementwise, so no batch effects."""
    return x * (0.25 / (0.25 + t.reshape(-1, *([1] * (x.ndim - 1))) ** 2))


def sample(seeds, solver, steps=6):
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((len(seeds), 3), generator=gens(seeds))
    return ds.sample(gaussian_x0, latents, schedule, steps, solver=solver, generator=gens([s + 100 for s in seeds]))


def test_the_stochastic_solvers_are_the_ones_expected():
    assert {"euler_ancestral", "edm_stochastic_heun", "euler_maruyama", "dpmpp_2m_sde"} <= set(STOCHASTIC)


@pytest.mark.parametrize("solver", STOCHASTIC)
def test_a_batch_sampled_whole_equals_the_batch_sampled_in_parts(solver):
    seeds = [11, 12, 13, 14, 15, 16]
    whole = sample(seeds, solver).samples
    parts = torch.cat([sample(seeds[:2], solver).samples, sample(seeds[2:], solver).samples])
    assert torch.equal(whole, parts)  # bit for bit
    swapped = sample(seeds[::-1], solver).samples  # the order in the batch does not matter either
    assert torch.equal(whole, swapped.flip(0))


@pytest.mark.parametrize("solver", ["euler_ancestral", "edm_stochastic_heun"])
def test_each_sample_depends_on_its_own_generator_only(solver):
    seeds = [1, 2, 3, 4]
    base = sample(seeds, solver).samples
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((4, 3), generator=gens(seeds))
    step_gens = gens([101, 102, 103, 104])
    step_gens[2] = torch.Generator().manual_seed(999)  # another step noise for sample 2 alone
    other = ds.sample(gaussian_x0, latents, schedule, 6, solver=solver, generator=step_gens).samples
    changed = (other != base).any(dim=1)
    assert changed.tolist() == [False, False, True, False]  # the solver's noise reached sample 2, and only it


def test_the_default_noise_is_each_generators_own_stream():
    """Row i of every draw is the next standard normal vector of generator i, as torch.randn draws it."""
    sampler = default_noise_sampler(torch.zeros(3, 5, dtype=torch.float64), gens([4, 5, 6]))
    draws = [sampler(torch.tensor(2.0), torch.tensor(1.0)) for _ in range(3)]
    for i, g in enumerate(gens([4, 5, 6])):
        for draw in draws:
            assert torch.equal(draw[i], torch.randn(5, generator=g, dtype=torch.float64))
    assert draws[0].dtype == torch.float64


def test_one_generator_still_draws_the_whole_batch_at_once():
    sampler = default_noise_sampler(torch.zeros(3, 5), torch.Generator().manual_seed(8))
    assert torch.equal(sampler(torch.tensor(2.0), torch.tensor(1.0)),
                       torch.randn(3, 5, generator=torch.Generator().manual_seed(8)))


def test_latents_from_a_generator_list_are_sigma_times_each_generators_normals():
    schedule = ds.create("noise_schedule", "edm")  # sigma_max = 80
    latents = schedule.init_latents((2, 4, 4), generator=gens([3, 9]), dtype=torch.float64)
    for row, seed in zip(latents, [3, 9]):
        expected = 80.0 * torch.randn(4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert torch.equal(row, expected)


def test_normal_noise_accepts_a_tuple_and_an_empty_batch():
    assert torch.equal(normal_noise((2, 3), tuple(gens([1, 2]))), normal_noise((2, 3), gens([1, 2])))
    assert normal_noise((0, 3), []).shape == (0, 3)


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        (lambda: gens([1, 2]), "2 generators were given for a batch of 6 samples"),
        (lambda: gens(range(7)), "7 generators were given for a batch of 6 samples"),
        (lambda: [*gens(range(5)), 3], r"generator\[5\] is a int, but every item .* must be a torch.Generator"),
        (lambda: 7, "generator must be None, a torch.Generator or a list of one torch.Generator per sample, got int"),
    ],
)
def test_a_wrong_generator_list_is_refused_by_sample_and_init_latents(generator, message):
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((6, 3), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ArgumentTypeError, match=message):
        ds.sample(gaussian_x0, latents, schedule, 4, solver="euler_ancestral", generator=generator())
    with pytest.raises(ArgumentTypeError, match=message):
        ds.sample(gaussian_x0, latents, schedule, 4, solver="heun", generator=generator())  # checked once, noise or not
    with pytest.raises(ArgumentTypeError, match=message):
        schedule.init_latents((6, 3), generator=generator())


def test_a_generator_on_another_device_is_refused():
    schedule = ds.create("noise_schedule", "edm")
    with pytest.raises(ArgumentTypeError, match=r"generator\[0\] draws on cpu but the noise is drawn on meta"):
        schedule.init_latents((2, 3), generator=gens([1, 2]), device="meta")
    with pytest.raises(ArgumentTypeError, match=r"^generator draws on cpu but the noise is drawn on meta"):
        check_generator(torch.Generator(), (2, 3), "meta")


def test_a_generator_list_needs_a_batch_dimension():
    with pytest.raises(ArgumentTypeError, match="a tensor without a batch dimension"):
        normal_noise((), gens([1]))
