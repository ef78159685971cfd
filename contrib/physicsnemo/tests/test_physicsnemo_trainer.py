"""The trainer's ``songunet`` backbone: PhysicsNeMo's SongUNet through ClassLabelsAdapter. Skipped where PhysicsNeMo
(or the trainer) is not installed; ``make physicsnemo-test`` runs it. The error without PhysicsNeMo is tested in
contrib/trainer/tests/test_trainer_backbones.py, everywhere."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("physicsnemo.models.diffusion_unets")
pytest.importorskip("diffusion_schemes_trainer")
from physicsnemo.models.diffusion_unets import SongUNet  # noqa: E402

from diffusion_schemes_physicsnemo import ClassLabelsAdapter  # noqa: E402
from diffusion_schemes_trainer.models import SongUNetConfig  # noqa: E402


def test_songunet_backbone_is_songunet_with_one_hot_labels_and_the_null_label():
    torch.manual_seed(0)
    backbone = SongUNetConfig(attn_resolutions=()).build((1, 8, 8), num_classes=3).eval()
    assert isinstance(backbone.net, ClassLabelsAdapter) and isinstance(backbone.net.net, SongUNet)
    net = backbone.net.net
    x, c_noise, labels = torch.randn(2, 1, 8, 8), torch.tensor([-0.5, 0.7]), torch.tensor([1, 3])
    with torch.no_grad():
        direct = net(x, c_noise, class_labels=torch.eye(4)[labels])
        torch.testing.assert_close(backbone(x, c_noise, labels), direct, rtol=0, atol=0)
        # no condition is the null label 3 (classifier-free guidance's), one-hot like the others
        torch.testing.assert_close(backbone(x, c_noise), net(x, c_noise, class_labels=torch.eye(4)[[3, 3]]), rtol=0, atol=0)
        assert not torch.equal(backbone(x, c_noise, torch.tensor([0, 0])), direct)  # the label reaches the network


@pytest.mark.slow  # a run with its final evaluation on digits (measured: 19 s)
def test_songunet_trains_on_digits_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from diffusion_schemes.cli import commands as cli

    code = cli.main(["train", "--data", "digits", "--model", "songunet", "--class-conditional", "--steps", "2",
                     "--batch-size", "8", "--sampling-steps", "2", "-q", "--set", "data.eval_size=16",
                     "--set", "projections=8", "--set", "ema_snapshot_every=1", "--set", "model.attn_resolutions=[]",
                     "--run-dir", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "checkpoint.pt").is_file()
