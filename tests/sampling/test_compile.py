"""The preconditioned forward, the loss and one step of every solver compile without a graph break.

``torch.compile(fullgraph=True)`` raises on any graph break, so tracing succeeding is the check.
The tests use ``backend="aot_eager"``: Dynamo traces the full graph and AOTAutograd builds the
forward (and backward) graphs, but no code is generated, which keeps them fast on the CPU;
inductor compiles the same graphs (see benchmarks/ for timings with it).
"""

from __future__ import annotations

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.sampling import PREDICTION_TYPES

BACKEND = "aot_eager"


class Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 1)
        self.emb = torch.nn.Linear(1, 3)

    def forward(self, x, c_noise, condition=None):
        return self.net(x) + self.emb(c_noise[:, None])[:, :, None, None]


@pytest.fixture(autouse=True)
def _reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled(fn):
    return torch.compile(fn, fullgraph=True, backend=BACKEND)


@pytest.mark.parametrize("name", ["edm", "vp"])
def test_preconditioned_forward(name):
    precond = ds.create("preconditioner", name, model=Backbone())
    x = torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.5, 3.0])
    assert torch.allclose(compiled(precond.forward_sigma)(x, sigma), precond.forward_sigma(x, sigma), atol=1e-6)
    t = torch.tensor([0.3, 0.9])
    assert torch.allclose(compiled(precond)(x, t), precond(x, t), atol=1e-6)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_loss_forward_and_backward(prediction_type):
    backbone = Backbone()
    precond = ds.create("preconditioner", "edm", model=backbone)  # an x0-predictor; other targets: the backbone
    model = precond if prediction_type == "x0" else backbone
    loss_fn = ds.MSEDSMLoss(model, ds.create("noise_schedule", "vp"), prediction_type=prediction_type)
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0.2, 0.8])
    loss = compiled(loss_fn)(x0, t=t, noise=noise)
    assert torch.allclose(loss, loss_fn(x0, t=t, noise=noise), rtol=1e-5)
    loss.backward()
    assert backbone.net.weight.grad is not None
    compiled(loss_fn)(x0)  # t and noise drawn inside the graph


STEP_SOLVERS = [i.name for i in ds.list_schemes("solver") if not ds.create("solver", i.name).adaptive]


def _args(solver, denoiser, x, sigmas, i, state):
    noise = torch.randn_like(x) if solver.adds_noise(False) else None
    return (denoiser, x, sigmas[i], sigmas[i + 1], state, noise, False)


@pytest.mark.parametrize("name", STEP_SOLVERS)
def test_one_solver_step(name):
    """A middle step, with the state four eager steps leave (a multistep solver's full history)."""
    schedule = ds.create("noise_schedule", "vp")
    precond = ds.create("preconditioner", "edm", model=Backbone())
    denoiser = schedule.get_denoiser(x0_predictor=precond)
    solver = ds.create("solver", name)
    x = torch.randn(2, 3, 4, 4)
    sigmas = schedule.sigmas(8).float()
    state = solver.start(sigmas)
    with torch.no_grad():
        for i in range(4):
            x, _, state = solver.step(*_args(solver, denoiser, x, sigmas, i, state))
    args = _args(solver, denoiser, x, sigmas, 4, state)
    step = compiled(solver.step)
    with torch.no_grad():
        got, _, _ = step(*args)
        expected, _, expected_state = solver.step(*args)
        assert torch.allclose(got, expected, atol=1e-5)
        # the next step's tensors reuse the same graph (no recompilation for another noise level)
        with torch._dynamo.config.patch(error_on_recompile=True):
            step(*_args(solver, denoiser, got, sigmas, 5, expected_state))


LOWER_ORDER_FINAL = [i.name for i in ds.list_schemes("solver") if "lower_order_final" in i.spec.model_fields]
# steps that shrink and grow in log sigma and in sigma: lower_order_final keeps some steps and drops others
UNEVEN = torch.tensor([80.0, 40.0, 20.0, 12.0, 8.0, 5.0, 4.0, 2.0, 1.5, 0.5, 0.2, 0.0])


@pytest.mark.parametrize("name", LOWER_ORDER_FINAL)
def test_lower_order_final_step(name):
    """With ``lower_order_final`` the per-step order comes from the plan made in ``start``: one graph
    serves the steps that keep the higher order and those that drop it, and gives the eager result."""
    precond = ds.create("preconditioner", "edm", model=Backbone())
    denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=precond)
    solver = ds.create("solver", {"name": name, "lower_order_final": True})
    x = torch.randn(2, 3, 4, 4)
    state = solver.start(UNEVEN)
    with torch.no_grad():
        for i in range(4):  # the history is full from here on
            x, _, state = solver.step(*_args(solver, denoiser, x, UNEVEN, i, state))
        compiled_steps = range(4, len(UNEVEN) - 2)  # every step but the last (to 0), a graph of its own
        assert {bool(solver.start(UNEVEN)["high"][i]) for i in compiled_steps} == {True, False}
        step = compiled(solver.step)
        for i in compiled_steps:
            args = _args(solver, denoiser, x, UNEVEN, i, state)
            with torch._dynamo.config.patch(error_on_recompile=i > compiled_steps[0]):
                got, _, _ = step(*args)
            x, _, state = solver.step(*args)
            assert torch.allclose(got, x, atol=1e-5)


# ---------------------------------------------------------------- guards: what dynamo checks before each call
# Before each call of a compiled graph dynamo evaluates one guard for every attribute, global, helper function and
# Python value the traced code read; at a small size those microseconds are the compiled hot paths' overhead over
# the same formula written inline (docs/performance.md, section 0). The forward and the loss read plain attributes
# set beforehand and write their constants out, so the guards they add over the inline formula stay few.


class InlineEDM(torch.nn.Module):
    """EDM's preconditioner written inline (Karras et al. 2022, Table 1): the reference for the guards."""

    def __init__(self, model, sigma_data=0.5):
        super().__init__()
        self.model, self.sigma_data = model, sigma_data

    def forward(self, x, sigma):
        sd, s = self.sigma_data, sigma.reshape(-1, *([1] * (x.ndim - 1)))
        out = self.model(x / (s**2 + sd**2).sqrt(), s.log().flatten() / 4)
        return sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * out


def inline_edm_loss(inline, x0, sigma, noise):
    """EDM's training loss written inline (Karras et al. 2022, eq. 2 with Table 1's weight)."""
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    weight = (s**2 + inline.sigma_data**2) / (s * inline.sigma_data) ** 2
    return (weight * (inline(x0 + s * noise, sigma) - x0) ** 2).mean()


def _guards(code):
    """The leaf guards of the one graph compiled from ``code``, as text (one line each: what it tests)."""
    eval_frame = pytest.importorskip("torch._dynamo.eval_frame")
    if not hasattr(eval_frame, "_debug_get_cache_entry_list"):
        pytest.skip("this torch does not expose dynamo's cache entries")
    entries = eval_frame._debug_get_cache_entry_list(code)
    assert len(entries) == 1, "one graph, compiled once"
    lines = []

    def walk(manager):
        for guard in manager.get_leaf_guards():
            lines.extend(part.split("  #")[0] for part in guard.verbose_code_parts())  # without the traced line
        for child in manager.get_child_managers():
            walk(child)

    walk(entries[0].guard_manager.root)
    return lines


#: Reads that once cost guards on every call: the bounds of the noise-level check computed by helpers (struct,
#: math and four functions of ``tensors``), ``_POSITIVE`` and the class's ``t_limits`` tuple item by item, the
#: ``validate`` property, ``LOSS_TYPES`` item by item, ``torch.as_tensor`` on a tensor, ``check_condition`` on None.
UNGUARDED = ("_closed_bounds", "_bounds_inside", "struct", "_POSITIVE", "t_limits", "fget", "LOSS_TYPES",
             "as_tensor", "check_condition")
#: The ``torch`` module read by the library on the traced path of the forward and the loss step (``torch.Tensor``,
#: ``torch.float32``, ``torch.exp``, ``torch.compiler.is_compiling``, ``torch._assert_async`` once were): each name a
#: guard, and each module reading ``torch`` besides the backbone's one more check, in Python, that both read the same
#: module. (The frame's own module reads as ``G['torch']``; another module's as ``G['__import_<module>'].torch``.)
TORCH_READS = ("G['torch']", "diffusion_schemes_dot_tensors'].torch", "_dot_checks'].torch", "_dot_affine'].torch",
               "_dot_schedules_dot_base'].torch", "_dot_weightings_dot_base'].torch", "_edm_dot__weighting'].torch")
#: Guards the library's forward and loss step may add to those of the same formula inline, with one to spare (with
#: torch 2.13: 16 and 57; 21 and 60 when the forward called helpers of other modules; 29 and 66 when the library's
#: modules on the traced path read ``torch`` and the forward called six helpers instead of four; 47 and 83 when the
#: noise-level check computed its bounds, the forward read the property and the class's tuple, and the loss read
#: LOSS_TYPES and called torch.as_tensor and check_condition on what needs neither).
EXTRA_GUARDS = {"forward": 17, "loss": 58}
#: Helpers of other modules the forward's traced path once called (``tensors.check_positive``, ``adapters.call_model``
#: and its ``check_output``): each one a guard on its module and one per name read there.
OTHER_MODULES = ("_dot_tensors'", "_dot_checks'", "call_model", "check_positive")


def test_forward_guards():
    backbone = Backbone()
    precond = ds.create("preconditioner", "edm", model=backbone)
    inline = InlineEDM(backbone)
    x, sigma = torch.randn(2, 3, 4, 4), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        torch.testing.assert_close(compiled(precond)(x, sigma), compiled(inline)(x, sigma))
    ours, reference = _guards(type(precond).forward.__code__), _guards(InlineEDM.forward.__code__)
    assert [g for g in ours if any(name in g for name in UNGUARDED + TORCH_READS + OTHER_MODULES)] == []
    assert len(ours) - len(reference) <= EXTRA_GUARDS["forward"]


def test_loss_guards():
    backbone = Backbone()
    schedule = ds.create("noise_schedule", "edm")
    loss_fn = ds.MSEDSMLoss(ds.create("preconditioner", "edm", model=backbone), schedule)
    inline = InlineEDM(backbone)
    reference = lambda x0, sigma, noise: inline_edm_loss(inline, x0, sigma, noise)  # noqa: E731
    x0, noise, sigma = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([0.5, 3.0])
    ours = compiled(loss_fn)(x0, t=sigma, noise=noise)
    torch.testing.assert_close(ours, compiled(reference)(x0, sigma, noise))
    ours.backward()
    ours, expected = _guards(type(loss_fn).forward.__code__), _guards(reference.__code__)
    # the schedule's own class-level t_limits (its check of the training times) is read through the schedule
    ours_lib = [g for g in ours if "noise_schedule" not in g]
    preconditioner = OTHER_MODULES[1:3]  # the preconditioner's part of the loss's path: no call_model, no checks module
    assert [g for g in ours_lib if any(name in g for name in UNGUARDED + TORCH_READS + preconditioner)] == []
    assert len(ours) - len(expected) <= EXTRA_GUARDS["loss"]
