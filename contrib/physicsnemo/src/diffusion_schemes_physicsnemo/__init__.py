"""diffusion-schemes inside NVIDIA PhysicsNeMo (2.2.2), and PhysicsNeMo's preconditioners here.

- :func:`as_physicsnemo` turns any installed noise schedule (a built one, a name or a config)
  into an object with PhysicsNeMo's noise-scheduler methods (``sample_time``, ``add_noise``,
  ``loss_weight``, ``timesteps``, ``init_latents``, ``get_denoiser``), so it runs in
  ``physicsnemo.diffusion.samplers.sample`` and ``physicsnemo.diffusion.metrics.losses.MSEDSMLoss``;
- :func:`from_physicsnemo` turns a PhysicsNeMo preconditioner (the legacy ``EDMPrecond``,
  ``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond`` or their newer bases) into the preconditioner
  of the same name here, reusing its network and weights;
- :class:`ClassLabelsAdapter` lets a network called as ``net(x, noise_labels, class_labels=...)``
  (PhysicsNeMo's ``SongUNet``, ``DhariwalUNet``) take a condition given as a tensor or a
  ``TensorDict``.

>>> from diffusion_schemes_physicsnemo import as_physicsnemo
>>> scheduler = as_physicsnemo("vp")
>>> scheduler.timesteps(3)                  # VP's own time: 1, ..., epsilon_s, then 0
tensor([1.0000, 0.5005, 0.0010, 0.0000])

The package imports and runs without PhysicsNeMo (its extra ``[physicsnemo]`` installs it);
nothing here imports PhysicsNeMo, and the names above load on first use.
"""

from __future__ import annotations

from diffusion_schemes.lazy import lazy_exports

__all__ = ["ClassLabelsAdapter", "PhysicsNeMoScheduler", "as_physicsnemo", "from_physicsnemo"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ClassLabelsAdapter": "._labels",
        "PhysicsNeMoScheduler": "._scheduler",
        "as_physicsnemo": "._scheduler",
        "from_physicsnemo": "._preconditioners",
    },
)
