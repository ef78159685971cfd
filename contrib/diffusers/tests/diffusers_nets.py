"""Tiny, seeded diffusers networks for the bridge's tests (offline: built from configs in code), and their fixtures.

Not a conftest.py: the repository's own conftest is imported by name (`from conftest import ...`).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

SHAPE = (2, 2, 8, 8)


class BoundedUNet(UNet2DModel):
    """A random UNet2DModel whose implied clean sample is ``tanh`` of its output, so samples stay O(1).

    With ``a`` the table's ``alpha_bar`` at the timestep (linear in the timestep between entries), the
    output is the epsilon (``(z - sqrt(a) x0) / sqrt(1 - a)``), v (``(sqrt(a) z - x0) / sqrt(1 - a)``)
    or sample (``x0``) prediction for ``x0 = tanh(UNet(z, t))``. Any deterministic function of
    ``(z, t)`` would do for comparing two samplers; this one keeps the samples bounded.
    """

    def bind(self, alphas_cumprod: torch.Tensor, prediction_type: str) -> BoundedUNet:
        self.table = alphas_cumprod.to(torch.float64)
        self.prediction_type = prediction_type
        return self

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        x0 = torch.tanh(super().forward(sample, timestep, class_labels=class_labels).sample)
        # the timestep in float32, as UNet2DModel's own time embedding takes it
        t = torch.as_tensor(timestep, device=sample.device).to(torch.float32).to(torch.float64).reshape(-1)
        low = t.floor().clamp(0, len(self.table) - 2)
        w = (t - low).reshape(-1, 1, 1, 1)
        low = low.long()
        a = ((1 - w) * self.table[low].reshape(-1, 1, 1, 1) + w * self.table[low + 1].reshape(-1, 1, 1, 1)).to(sample.dtype)
        if self.prediction_type == "epsilon":
            out = (sample - a.sqrt() * x0) / (1 - a).sqrt()
        elif self.prediction_type == "v_prediction":
            out = (a.sqrt() * sample - x0) / (1 - a).sqrt()
        else:
            out = x0
        return UNet2DOutput(sample=out)


def tiny_unet(scheduler, seed: int = 0, dtype: torch.dtype = torch.float64, **config) -> BoundedUNet:
    """A seeded two-level UNet2DModel on 8x8 images with 2 channels, bound to ``scheduler``'s table."""
    torch.manual_seed(seed)
    unet = BoundedUNet(
        sample_size=SHAPE[-1], in_channels=SHAPE[1], out_channels=SHAPE[1], layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **config,
    )
    return unet.to(dtype).eval().bind(scheduler.alphas_cumprod, scheduler.config.prediction_type)


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: one thread is fastest, and several contend on a shared machine (30x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def noise():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
