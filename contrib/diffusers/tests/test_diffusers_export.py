"""A run trained here with diffusers' UNet2DModel, saved in diffusers' format and sampled by DDPMPipeline with our scheduler.

The run trains a few steps on digits with ``--model unet2d`` and the ``discrete`` scheme on diffusers'
float32 linear table (``precision = "float32"``: the table diffusers computes, bit for bit), is exported by
:func:`export_run`, loaded back with ``UNet2DModel.from_pretrained`` and
``DiffusionSchemesScheduler.from_pretrained``, and ``DDPMPipeline``'s images must equal ``ds.sample`` on the
run rebuilt by the trainer (what ``diffusion-schemes sample`` samples), from the same noise, in float64.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers_nets import _one_thread  # noqa: F401 - fixture
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import diffusion_schemes as ds
from diffusion_schemes_diffusers import DiffusersBridgeError, DiffusionSchemesScheduler, export_run, from_diffusers

trainer = pytest.importorskip("diffusion_schemes_trainer")
pytest.importorskip("sklearn")  # the digits
from diffusion_schemes.cli import commands as cli  # noqa: E402
from diffusion_schemes_trainer.runs import rebuild  # noqa: E402
from diffusion_schemes_trainer.storage import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers and numpy 2

FLOAT32_TABLE = ["--set", "preconditioner.precision=float32", "--set", "noise_schedule.precision=float32"]
SHORT = ["--steps", "3", "--batch-size", "8", "--sampling-steps", "3", "-q", "--set", "data.eval_size=16",
         "--set", "projections=8", "--set", "ema_snapshot_every=1"]
TINY = [*SHORT, "--set", "model.block_out_channels=[8, 16]", "--set", "model.norm_num_groups=4",
        "--set", "model.attention_head_dim=4"]


def _train(run_dir, *args):
    code = cli.main(["train", "--data", "digits", "--model", "unet2d", *TINY, "--run-dir", str(run_dir), *args])
    assert code == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("unet2d") / "run"
    _train(run_dir, "--scheme", "discrete", "--solver", "heun", *FLOAT32_TABLE)
    return run_dir


@pytest.mark.slow  # the run: training and its final evaluation on digits (about 18 s on 2 shared cores)
def test_exported_run_in_ddpm_pipeline_equals_ds_sample(run, tmp_path):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["model"]["name"] == "unet2d" and metrics["final"]["num_samples"] == 16
    folder = export_run(run, tmp_path / "pipe")
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet").to(torch.float64)
    scheduler = DiffusionSchemesScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.solver.spec.name == "heun" and scheduler.preconditioner.spec.name == "discrete"
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=5,
                  output_type="np", return_dict=False)[0]

    config, precond, schedule = rebuild(load_checkpoint(run))  # the run as `diffusion-schemes sample` rebuilds it
    precond = precond.to(torch.float64).eval()
    for name, weights in unet.state_dict().items():  # the EMA weights went out, unchanged
        assert torch.equal(weights, precond.model.unet.state_dict()[name]), name
    noise = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # the pipeline's
    sigma_0 = schedule.sigmas(5)[0].to(torch.float64)
    with torch.no_grad():
        result = ds.sample(precond, noise * (1 + sigma_0**2).sqrt(), schedule, 5, solver=config.solver)
    ours = (result.samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    print(f"DDPMPipeline vs ds.sample: max difference {abs(images - ours).max():.2e}")
    assert result.nfe == 9 and abs(images - ours).max() < 1e-6
    assert 0 < images.std()  # not a saturated picture, where any two samplers would agree


@pytest.mark.slow
def test_exported_unet_is_the_same_model_under_diffusers_own_ddpm_table(run, tmp_path):
    """With precision float32 the run's table is diffusers' linear DDPMScheduler table: from_diffusers on the
    exported UNet and diffusers' default scheduler is the run's denoiser."""
    unet = UNet2DModel.from_pretrained(export_run(run, tmp_path / "pipe"), subfolder="unet").to(torch.float64)
    theirs, _ = from_diffusers(unet, DDPMScheduler())
    _, ours, _ = rebuild(load_checkpoint(run))
    ours = ours.to(torch.float64).eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.7, 3.0, 80.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(theirs.forward_sigma(x, sigma), ours.forward_sigma(x, sigma), rtol=0, atol=1e-12)


def test_only_unet2d_runs_export(tmp_path, capsys):
    run_dir = tmp_path / "conv"
    assert cli.main(["train", "--data", "digits", "--model", "conv", "--set", "model.channels=8", "--set", "model.blocks=1",
                     *SHORT, "--run-dir", str(run_dir)]) == 0
    with pytest.raises(DiffusersBridgeError, match="'conv' backbone.*--model unet2d"):
        export_run(run_dir, tmp_path / "out")
