"""Names shared by the docstring examples of the core, the plugins and contrib (the doctest namespace).

``Backbone(channels)``: a 1x1 convolution standing for any network ``F(x, c_noise, condition)``.
``CondBackbone()``: a 1x1 convolution over 3 image channels plus 1 concatenated condition
channel, plus a linear map of a 4-vector condition (what :class:`ConcatConditionWrapper` passes on).
``broken_plugin_on_path()``: a context in which an installed distribution ``broken-plugin`` names
an entry-point module that does not exist (for the plugin-error examples).
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sys
import tempfile

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


@contextlib.contextmanager
def broken_plugin_on_path():
    site = pathlib.Path(tempfile.mkdtemp())
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[diffusion_schemes]\nbroken = no_such_module\n")
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        shutil.rmtree(site)


@pytest.fixture(autouse=True)
def _doctest_backbones(doctest_namespace):
    doctest_namespace["Backbone"] = Backbone
    doctest_namespace["CondBackbone"] = CondBackbone
    doctest_namespace["broken_plugin_on_path"] = broken_plugin_on_path
