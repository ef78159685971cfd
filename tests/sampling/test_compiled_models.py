"""A compiled preconditioner as the model of ``ds.sample`` and of the loss: ``torch.compile``'s wrapper of it, or
the preconditioner compiled in place (``precond.compile()``, which compiles only its ``__call__``).

Each is reached through its compiled call where that call can be given the right time (its time is the noise
level, or the schedule is of its own scheme), with the same result as the preconditioner uncompiled; with a
schedule of another scheme whose time is not its noise level it is called uncompiled, correctly, with a warning.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import diffusion_schemes as ds

BACKEND = "eager"  # dynamo traces, nothing is generated: the routing, not the kernels, is under test


def net(x, c_noise, condition=None):
    return 0.3 * x + 0.1 * c_noise[:, None] + (0 if condition is None else condition)


#: A condition bound in a ``functools.partial`` of the preconditioner: it must reach the network on every path.
CONDITION = torch.full((4, 2), 0.25)
HOWS = ["wrapper", "in place", "partial of the wrapper", "partial, in place"]


def _bound(model, how: str):
    """``model``, or a ``partial`` of it binding :data:`CONDITION` for the ``how`` that names one."""
    return functools.partial(model, condition=CONDITION) if how.startswith("partial") else model


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled(name: str, how: str):
    """The preconditioner ``name`` compiled ``how``, and a list that counts the calls of its compiled code."""
    precond = ds.create("preconditioner", name, model=net)
    calls = []
    if "wrapper" in how:
        model = torch.compile(precond, backend=BACKEND, fullgraph=True)
        inner = model.forward
        model.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
        return _bound(model, how), calls
    precond.compile(backend=BACKEND, fullgraph=True)
    compiled_call = precond._compiled_call_impl
    precond._compiled_call_impl = lambda *a, **k: calls.append(1) or compiled_call(*a, **k)
    return _bound(precond, how), calls


def _inputs(schedule):
    x0, noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.randn(4, 2)
    t = schedule.sample_time(4, generator=torch.Generator().manual_seed(1))
    return x0, t, noise


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("pair", [("edm", "edm"), ("vp", "vp"), ("edm", "vp"), ("ve", "ve")])
def test_compiled_preconditioner_is_called_compiled_with_the_right_time(pair, how):
    name, scheme = pair
    schedule = ds.create("noise_schedule", scheme)
    eager = _bound(ds.create("preconditioner", name, model=net), how)
    model, calls = _compiled(name, how)
    x0, t, noise = _inputs(schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pair the compiled call serves right runs without the fallback's warning
        loss = ds.MSEDSMLoss(model, schedule)(x0, t=t, noise=noise)
        assert calls, "the loss did not call the compiled preconditioner"
        torch.testing.assert_close(loss, ds.MSEDSMLoss(eager, schedule)(x0, t=t, noise=noise), rtol=1e-4, atol=1e-6)
        calls.clear()
        latents = schedule.init_latents((4, 2), generator=torch.Generator().manual_seed(2))
        samples = ds.sample(model, latents, schedule, 4).samples
        assert len(calls) == 7, "ds.sample did not call the compiled preconditioner at each of Heun's 7 evaluations"
    reference = ds.sample(eager, latents, schedule, 4).samples
    # a time that is not the noise level goes sigma -> t -> sigma through the schedule in float32 on this path
    torch.testing.assert_close(samples, reference, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("how", HOWS)
def test_compiled_preconditioner_of_another_scheme_runs_uncompiled_with_a_warning(how):
    """A VP preconditioner's compiled call takes VP time; an EDM schedule's time is a noise level it cannot be
    turned into: the loss and the sampler call its ``forward_sigma`` (right, uncompiled) and say so."""
    schedule = ds.create("noise_schedule", "edm")
    eager = _bound(ds.create("preconditioner", "vp", model=net), how)
    model, calls = _compiled("vp", how)
    x0, t, noise = _inputs(schedule)
    with pytest.warns(UserWarning, match=r"compiled VPPreconditioner \('vp'\) runs with a 'edm' schedule"):
        loss = ds.MSEDSMLoss(model, schedule)(x0, t=t, noise=noise)
    torch.testing.assert_close(loss, ds.MSEDSMLoss(eager, schedule)(x0, t=t, noise=noise), rtol=1e-5, atol=1e-6)
    latents = schedule.init_latents((4, 2), generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="called uncompiled through forward_sigma"):
        samples = ds.sample(model, latents, schedule, 4).samples
    torch.testing.assert_close(samples, ds.sample(eager, latents, schedule, 4).samples, rtol=1e-5, atol=1e-6)
    assert not calls


@pytest.mark.parametrize("how", HOWS)
def test_pairing_is_checked_for_a_compiled_preconditioner(how):
    """Compiled, wrapped or bound in a partial, a preconditioner is still checked against a schedule of its scheme
    built differently."""
    precond = ds.create("preconditioner", {"name": "vp", "beta_d": 19.9}, model=net)
    if "wrapper" in how:
        precond = torch.compile(precond, backend=BACKEND)
    else:
        precond.compile(backend=BACKEND)
    with pytest.raises(ds.PairingError):
        ds.MSEDSMLoss(_bound(precond, how), ds.create("noise_schedule", {"name": "vp", "beta_d": 10.0}))
