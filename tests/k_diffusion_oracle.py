"""k-diffusion's ``sampling`` module as a test oracle, without importing the rest of k-diffusion.

k-diffusion 0.1.1.post1 is installed with ``--no-deps`` (see the Makefile): its package
``__init__`` imports image and training code whose dependencies are absent, so the oracle loads
``k_diffusion/sampling.py`` alone, under a stand-in package whose ``utils`` holds the one helper
it uses (``append_dims``: trailing singleton dimensions, as k-diffusion documents it).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

_NAME = "_k_diffusion_oracle"


def k_sampling() -> types.ModuleType:
    """``k_diffusion.sampling`` loaded from its file; skips the test when k-diffusion is not installed."""
    if f"{_NAME}.sampling" in sys.modules:
        return sys.modules[f"{_NAME}.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion==0.1.1.post1 is not installed (make setup installs it with --no-deps)")
    for dep in ("scipy", "torchdiffeq", "torchsde", "tqdm"):
        pytest.importorskip(dep)
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    package = types.ModuleType(_NAME)
    package.__path__ = []
    utils = types.ModuleType(f"{_NAME}.utils")
    utils.append_dims = lambda x, target_dims: x[(...,) + (None,) * (target_dims - x.ndim)]
    package.utils = utils
    sys.modules[_NAME], sys.modules[f"{_NAME}.utils"] = package, utils
    module_spec = importlib.util.spec_from_file_location(f"{_NAME}.sampling", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[f"{_NAME}.sampling"] = module
    module_spec.loader.exec_module(module)
    return module
