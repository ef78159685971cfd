"""Backbones wrapping other libraries' networks: diffusers' UNet2DModel (``unet2d``) and PhysicsNeMo's SongUNet (``songunet``).

The round trip of a ``unet2d`` run through a diffusers pipeline is in contrib/diffusers/tests
(test_diffusers_export.py); PhysicsNeMo is not installed in the project's environment (it needs
another torch): the SongUNet backbone itself is tested in contrib/physicsnemo/tests (``make
physicsnemo-test``), its error test here runs everywhere.
"""

from __future__ import annotations

import sys

import pytest
import torch

from diffusion_schemes_trainer import TrainerError, load_config
from diffusion_schemes_trainer.models import SongUNetConfig, UNet2DConfig
from diffusion_schemes_trainer.models.songunet import INSTALL

SMALL_UNET2D = {"block_out_channels": (8, 16), "norm_num_groups": 4, "attention_head_dim": 4}


def _hide(monkeypatch, package):
    """Make ``package`` (and any of its modules already imported) unimportable for this test."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


# ---------------------------------------------------------------- unet2d


def test_unet2d_is_diffusers_unet_called_with_timestep_and_class_labels():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    net = UNet2DConfig(**SMALL_UNET2D).build((2, 8, 8), num_classes=3).eval()
    assert isinstance(net.unet, diffusers.UNet2DModel) and net.unet.config.num_class_embeds == 4
    x, c_noise, labels = torch.randn(2, 2, 8, 8), torch.tensor([3.0, 700.0]), torch.tensor([1, 3])
    with torch.no_grad():
        direct = net.unet(x, c_noise, class_labels=labels).sample
        torch.testing.assert_close(net(x, c_noise, labels), direct, rtol=0, atol=0)
        # no condition is the null label 3, which classifier-free guidance evaluates
        torch.testing.assert_close(net(x, c_noise), net.unet(x, c_noise, class_labels=torch.tensor([3, 3])).sample,
                                   rtol=0, atol=0)
        assert not torch.allclose(net(x, c_noise, torch.tensor([0, 0])), direct)
    with pytest.raises(TrainerError, match=r"integer labels shaped \(2,\)"):
        net(x, c_noise, torch.tensor([0.0, 1.0]))


def test_unconditional_unet2d_refuses_a_condition_and_trains_under_any_preconditioner():
    pytest.importorskip("diffusers")
    import diffusion_schemes as ds

    net = UNet2DConfig(**SMALL_UNET2D).build((1, 8, 8))
    with pytest.raises(TrainerError, match="unet2d backbone is unconditional"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1]))
    precond = ds.create("preconditioner", "iddpm", model=net)
    x = torch.randn(4, 1, 8, 8)
    loss = ds.MSEDSMLoss(precond, ds.create("noise_schedule", "iddpm"))(x, generator=torch.Generator().manual_seed(0))
    loss.mean().backward()
    assert torch.isfinite(loss).all() and all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("fields, message", [
    ({"block_out_channels": (8, 16, 32)}, "one block type per level"),
    ({"block_out_channels": (8, 12), "norm_num_groups": 8}, "does not divide the channels"),
])
def test_unet2d_config_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        UNet2DConfig(**fields)


def test_unet2d_needs_sides_it_can_halve_and_names_the_install_without_diffusers(monkeypatch):
    with pytest.raises(TrainerError, match="multiples of 4"):
        UNet2DConfig(block_out_channels=(8, 8, 8), down_block_types=("DownBlock2D",) * 3,
                     up_block_types=("UpBlock2D",) * 3).build((1, 6, 6))
    _hide(monkeypatch, "diffusers")
    with pytest.raises(TrainerError, match=r"pip install 'diffusion-schemes-trainer\[diffusers\]'"):
        UNet2DConfig().build((1, 8, 8))


def test_unet2d_and_songunet_are_config_tables_by_name():
    assert load_config(overrides=["model.name='unet2d'"]).model == UNet2DConfig()
    assert load_config(overrides=["model.name='songunet'", "model.num_blocks=2"]).model == SongUNetConfig(num_blocks=2)


# ---------------------------------------------------------------- songunet


def test_songunet_without_physicsnemo_names_what_to_install(monkeypatch):
    _hide(monkeypatch, "physicsnemo")
    with pytest.raises(TrainerError) as info:
        SongUNetConfig().build((1, 8, 8))
    assert INSTALL in str(info.value) and INSTALL == "pip install 'diffusion-schemes-physicsnemo[physicsnemo]'"
    assert "SongUNet" in str(info.value)
