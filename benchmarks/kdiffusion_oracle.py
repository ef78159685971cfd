"""k-diffusion's sampling module as an oracle, loaded without its package ``__init__``.

``k_diffusion/__init__.py`` imports every submodule, and ``k_diffusion.utils`` needs PIL,
safetensors and torchvision, none of which the samplers use: ``sampling`` takes only
``utils.append_dims`` from it. So the package is entered through a bare module object whose
``__path__`` is the installed directory (its ``__init__`` never runs) with a stand-in
``k_diffusion.utils`` holding ``append_dims``; ``k_diffusion.sampling`` then imports with its
real dependencies (scipy, torchdiffeq, torchsde, tqdm). The stand-ins are removed from
``sys.modules`` afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _append_dims(x, target_dims):
    return x.reshape(*x.shape, *([1] * (target_dims - x.ndim)))


def load_sampling():
    """k-diffusion's ``k_diffusion.sampling`` module (k-diffusion 0.1.1.post1)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed; run `make setup` (requirements-dev.txt installs it)")
    names = ("k_diffusion", "k_diffusion.utils", "k_diffusion.sampling")
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    try:
        sys.modules.pop("k_diffusion.sampling", None)
        return importlib.import_module("k_diffusion.sampling")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
