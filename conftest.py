"""Names shared by the docstring examples of the core, the plugins and contrib (the doctest namespace).

``Backbone(channels)``: a 1x1 convolution standing for any network ``F(x, c_noise, condition)``.
``CondBackbone()``: a 1x1 convolution over 3 image channels plus 1 concatenated condition
channel, plus a linear map of a 4-vector condition (what :class:`ConcatConditionWrapper` passes on).
"""

from __future__ import annotations

import pytest
import torch


class Backbone(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x, t, condition=None):
        return self.net(x)


class CondBackbone(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3 + 1, 3, 1)
        self.vec = torch.nn.Linear(4, 3)

    def forward(self, x, t, condition=None):
        return self.net(x) + self.vec(condition)[:, :, None, None]


@pytest.fixture(autouse=True)
def _doctest_backbones(doctest_namespace):
    doctest_namespace["Backbone"] = Backbone
    doctest_namespace["CondBackbone"] = CondBackbone
