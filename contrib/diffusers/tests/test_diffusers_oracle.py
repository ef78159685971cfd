"""Our solvers on diffusers networks, through from_diffusers, against diffusers' own schedulers (float64).

The network is a seeded UNet2DModel whose implied clean sample is bounded (``diffusers_nets.BoundedUNet``).
Both sides start from the same latent: diffusers' ``noise * init_noise_sigma``; where that is ``noise``
itself (DDIM, DPM-Solver: ``init_noise_sigma = 1``), our unscaled latent is ``noise / alpha(sigma_0)``.
diffusers keeps its sigmas in float32, which bounds the agreement (measured: up to 1.3e-6 with Karras
sigmas, whose timesteps it maps from float32 sigmas, 5e-7 otherwise; checked to 1e-5); where float32 coefficients
of diffusers would hide a difference (DDIM's alpha_bar, DPM-Solver's sigmas on the cosine table, whose
top sigma is 20291), its own table values are upcast to float64 first.
"""

from __future__ import annotations

import pytest
import torch
from diffusers_nets import _one_thread, noise, tiny_unet  # noqa: F401 - fixtures
from diffusers import (
    DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from tensordict import TensorDict

import diffusion_schemes as ds
from diffusion_schemes_diffusers import DiffusersBridgeError, as_diffusers_scheduler, from_diffusers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers and numpy 2 (np.array copy=False)

SCALED = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
DPM_LINSPACE = {"name": "linspace", "round": True, "extra_point": True}


def _upcast_ddim(s):
    s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
    s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)


def _upcast_dpm(s):
    table = ((1 - s.alphas_cumprod.to(torch.float64)) / s.alphas_cumprod.to(torch.float64)).sqrt()
    s.sigmas = torch.cat([table[s.timesteps.long()], torch.zeros(1, dtype=torch.float64)])


def diffusers_loop(scheduler, unet, noise, num_steps, upcast=None, **model_kwargs):
    scheduler.set_timesteps(num_steps)
    if upcast is not None:
        upcast(scheduler)
    z = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(z, t), t, **model_kwargs).sample
            z = scheduler.step(out, t, z).prev_sample
    return z


def start(scheduler, noise, sigma_0):
    """Our unscaled latent holding diffusers' initial latent."""
    z = noise * scheduler.init_noise_sigma
    return z * (1 + sigma_0**2).sqrt() if scheduler.init_noise_sigma == 1 else z


CASES = {  # scheduler, our solver, our discretization, steps, upcast
    "euler-linspace": (lambda **c: EulerDiscreteScheduler(**c), "euler", "linspace", 10, None),
    "euler-karras": (lambda **c: EulerDiscreteScheduler(use_karras_sigmas=True, **c), "euler", "karras", 10, None),
    "heun": (lambda **c: HeunDiscreteScheduler(**c), "heun", "linspace", 8, None),
    "dpmpp_2m": (lambda **c: DPMSolverMultistepScheduler(**c), "dpmpp_2m", DPM_LINSPACE, 10, None),
    "dpmpp_2m-cosine": (lambda **c: DPMSolverMultistepScheduler(**{**c, "beta_schedule": "squaredcos_cap_v2"}),
                        "dpmpp_2m", DPM_LINSPACE, 10, _upcast_dpm),
    "ddim-eta0": (lambda **c: DDIMScheduler(**c), "euler", "leading", 10, _upcast_ddim),
}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("case", list(CASES))
def test_our_solvers_equal_diffusers_schedulers(case, prediction_type, noise):
    make, solver, discretization, steps, upcast = CASES[case]
    scheduler = make(prediction_type=prediction_type, **({} if "cosine" in case else SCALED))
    unet = tiny_unet(scheduler)
    want = diffusers_loop(scheduler, unet, noise, steps, upcast)
    precond, schedule = from_diffusers(unet, scheduler.config)
    sigma_0 = ds.create("discretization", discretization).sigmas(steps, schedule)[0]
    got = ds.sample(precond, start(scheduler, noise, sigma_0), schedule, steps, solver=solver, discretization=discretization)
    assert float(want.abs().max()) < 2  # the bounded network keeps the samples O(1)
    torch.testing.assert_close(got.samples, want, rtol=0, atol=1e-5)


def test_float32_sigmas_of_diffusers_cost_1e_4_on_the_cosine_table(noise):
    """Without the upcast, diffusers' float32 sigma at 20291 moves its first x0 estimate: measured 1.2e-4."""
    make, solver, discretization, steps, _ = CASES["dpmpp_2m-cosine"]
    scheduler = make(prediction_type="epsilon")
    unet = tiny_unet(scheduler)
    want = diffusers_loop(scheduler, unet, noise, steps)
    precond, schedule = from_diffusers(unet, scheduler.config)
    sigma_0 = ds.create("discretization", discretization).sigmas(steps, schedule)[0]
    got = ds.sample(precond, start(scheduler, noise, sigma_0), schedule, steps, solver=solver, discretization=discretization)
    assert 1e-5 < float((got.samples - want).abs().max()) < 1e-3


def test_sample_prediction(noise):
    scheduler = DDIMScheduler(prediction_type="sample", **SCALED)
    unet = tiny_unet(scheduler)
    want = diffusers_loop(scheduler, unet, noise, 6, _upcast_ddim)
    precond, schedule = from_diffusers(unet, scheduler.config)
    sigma_0 = ds.create("discretization", "leading").sigmas(6, schedule)[0]
    got = ds.sample(precond, start(scheduler, noise, sigma_0), schedule, 6, solver="euler", discretization="leading")
    torch.testing.assert_close(got.samples, want, rtol=0, atol=1e-10)


SOLVERS = [("euler", "linspace"), ("heun", "linspace"), ("dpmpp_2m", "karras"), ("euler_ancestral", "leading"),
           ("dpm_2", "trailing"), ("unipc", "linspace"), ("edm_stochastic_heun", "linspace"),
           ("dpmpp_2s_ancestral", "leading")]


@pytest.mark.parametrize("solver, discretization", SOLVERS)
def test_our_scheduler_in_ddpm_pipeline_equals_ds_sample(solver, discretization, noise):
    ddpm = DDPMScheduler(prediction_type="v_prediction")
    unet = tiny_unet(ddpm)
    precond, schedule = from_diffusers(unet, ddpm)
    pipe = DDPMPipeline(unet=unet, scheduler=as_diffusers_scheduler(schedule, solver, discretization, precond))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=6,
                  output_type="np", return_dict=False)[0]
    generator = torch.Generator().manual_seed(3)
    pipeline_noise = torch.randn(noise.shape, generator=generator, dtype=torch.float64)  # what the pipeline drew
    sigma_0 = ds.create("discretization", discretization).sigmas(6, schedule)[0]
    result = ds.sample(precond, pipeline_noise * (1 + sigma_0**2).sqrt(), schedule, 6, solver=solver,
                       discretization=discretization, generator=generator)
    ours = (result.samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(images - ours).max() < 1e-6


def test_ddpm_ancestral_sampling_is_our_euler_ancestral_on_the_leading_grid():
    """DDPM's posterior step (Ho et al. 2020, eq. 7) is the ancestral step; same generator, same images."""
    images = {}
    for name in ("diffusers", "ours"):
        ddpm = DDPMScheduler(clip_sample=False, **SCALED)
        unet = tiny_unet(ddpm)
        scheduler = ddpm if name == "diffusers" else as_diffusers_scheduler(
            from_diffusers(unet, ddpm)[1], "euler_ancestral", "leading", from_diffusers(unet, ddpm)[0])
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images[name] = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=8,
                            output_type="np", return_dict=False)[0]
    assert abs(images["diffusers"] - images["ours"]).max() < 1e-6


def test_class_conditional_model_with_guidance(noise):
    """class_labels reach the UNet; classifier-free guidance on D equals guidance on epsilon (c_skip = 1)."""
    scheduler = EulerDiscreteScheduler(**SCALED)
    unet = tiny_unet(scheduler, num_class_embeds=3)
    labels, null = torch.tensor([0, 1]), torch.tensor([2, 2])
    scheduler.set_timesteps(6)
    z = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(z, t)
            cond, uncond = unet(x, t, class_labels=labels).sample, unet(x, t, class_labels=null).sample
            z = scheduler.step(uncond + 2.5 * (cond - uncond), t, z).prev_sample
    precond, schedule = from_diffusers(unet, scheduler, condition="class_labels")
    got = ds.sample(precond, noise * scheduler.init_noise_sigma, schedule, 6, solver="euler",
                    discretization="linspace", condition=labels, guidance=ds.Guidance(2.5, null_condition=null))
    torch.testing.assert_close(got.samples, z, rtol=0, atol=1e-6)
    assert got.nfe == 12


def test_several_conditions_as_a_tensordict():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None):
            seen.update(class_labels=class_labels, encoder_hidden_states=encoder_hidden_states)
            return type("Out", (), {"sample": torch.zeros_like(sample)})()

    precond, schedule = from_diffusers(Net(), DDPMScheduler(), condition=["class_labels", "encoder_hidden_states"])
    condition = TensorDict({"class_labels": torch.tensor([1, 2]), "encoder_hidden_states": torch.ones(2, 3, 4)}, batch_size=[2])
    ds.sample(precond, torch.randn(2, 1, 2, 2), schedule, 2, solver="euler", condition=condition)
    assert torch.equal(seen["class_labels"], condition["class_labels"])
    assert torch.equal(seen["encoder_hidden_states"], condition["encoder_hidden_states"])
    with pytest.raises(DiffusersBridgeError, match="encoder_hidden_states"):
        ds.sample(precond, torch.randn(2, 1, 2, 2), schedule, 2, solver="euler",
                  condition=TensorDict({"class_labels": torch.tensor([1, 2])}, batch_size=[2]))


def test_inpainting_a_diffusers_model(noise):
    scheduler = DDPMScheduler(**SCALED)
    unet = tiny_unet(scheduler)
    precond, schedule = from_diffusers(unet, scheduler)
    known, mask = torch.full_like(noise, 0.3), torch.zeros_like(noise)
    mask[..., :4] = 1
    result = ds.sample(precond, noise * schedule.sigmas(4)[0], schedule, 4, solver="dpmpp_2m", mask=mask, known=known)
    assert torch.equal(result.samples[..., :4], known[..., :4])
    assert not torch.allclose(result.samples[..., 4:], known[..., 4:])


def test_kdpm2_places_its_midpoints_in_log_sigma(noise):
    """KDPM2's grid interpolates sigma linearly in the timestep but maps its midpoints back in log sigma."""
    from diffusers import KDPM2DiscreteScheduler

    scheduler = KDPM2DiscreteScheduler(**SCALED)
    unet = tiny_unet(scheduler)
    want = diffusers_loop(scheduler, unet, noise, 6)
    _, linear = from_diffusers(unet, scheduler.config)
    precond, schedule = from_diffusers(unet, scheduler.config, interpolation="log_sigma")
    grid = ds.create("discretization", "linspace").sigmas(6, linear)
    got = ds.sample(precond, noise * scheduler.init_noise_sigma, schedule, sigmas=grid, solver="dpm_2")
    # measured 2.5e-5 (diffusers' midpoint sigmas are float32); with the linear map alone 3.2e-4
    torch.testing.assert_close(got.samples, want, rtol=0, atol=1e-4)
    one_map = ds.sample(from_diffusers(unet, scheduler.config)[0], noise * scheduler.init_noise_sigma, linear,
                        sigmas=grid, solver="dpm_2")
    assert float((one_map.samples - want).abs().max()) > 1e-4


def test_karras_grid_on_the_cosine_table_where_diffusers_dpm_solver_breaks(noise):
    """diffusers rounds DPM-Solver's Karras timesteps: on squaredcos_cap_v2 the first five are all 998 and its
    20-step run fails with an IndexError. Ours keeps distinct fractional timesteps, and in a pipeline loop equals ds.sample."""
    theirs = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    theirs.set_timesteps(20)
    assert theirs.timesteps[:5].tolist() == [998] * 5
    unet = tiny_unet(theirs)
    precond, schedule = from_diffusers(unet, theirs)
    ours = as_diffusers_scheduler(schedule, "dpmpp_2m", "karras", precond)
    ours.set_timesteps(20)
    assert bool((ours.timesteps[1:] < ours.timesteps[:-1]).all())
    z = noise * ours.init_noise_sigma
    with torch.no_grad():
        for t in ours.timesteps:
            z = ours.step(unet(ours.scale_model_input(z, t), t).sample, t, z).prev_sample
    sigma_0 = ds.create("discretization", "karras").sigmas(20, schedule)[0]
    want = ds.sample(precond, noise * ours.init_noise_sigma * (1 + sigma_0**2).sqrt(), schedule, 20,
                     solver="dpmpp_2m", discretization="karras")
    torch.testing.assert_close(z, want.samples, rtol=0, atol=1e-6)
