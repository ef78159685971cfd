"""The overhead aims: the library's hot paths against the same formulas written inline, side by side.

Three paths, each at the tiny size (2-D MLP, batch 1 and 64) and the conv size (3x32x32, batch 1
and 64), eager and under ``torch.compile``:

- **preconditioner forward** (inference): ``EDMPreconditioner`` built by name, called
  ``precond(x, sigma)`` with its default per-call domain check, against EDM's preconditioner
  written inline (Karras et al. 2022, Table 1: the coefficients from sigma inside the call);
  the formula with its coefficients computed beforehand is shown beside it as the floor no
  wrapper can beat;
- **loss step** (forward and backward): ``ds.MSEDSMLoss`` with the EDM schedule and its default
  weighting against EDM's loss written inline (eq. 2 with Table 1's weight), same sigma and noise;
- **solver loop**: ``ds.sample`` with Heun's solver (Karras et al. 2022, Algorithm 1) against the
  same loop written inline around the inline preconditioner on the same grid, per network
  evaluation.

Compiled: after a first compilation of their own (the module a process compiles first runs its guards slower:
measured beside the aims), each case runs twice, from a reset dynamo, the library's modules compiled first and then
the inline code's first, its ratios paired repeat by repeat; with ``fullgraph=True, dynamic=False``, every module in place (``module.compile()``: its
``__call__`` compiled, no wrapper module in front, as the user guide advises), the inline loss function
through ``torch.compile``; the loss step is also timed through ``torch.compile``'s wrapper module, to
show what that way of compiling adds; the solver loops run in Python around the compiled networks. Every ratio is ours /
inline, the median of interleaved blocks [interquartile range], timed in this process's CPU time
(``time.process_time``), so other processes on a shared machine do not enter the figure. The
CUDA-graph capture of a whole sampling grid runs only where a GPU is present.
"""

from __future__ import annotations

import contextlib
import time
import timeit
import types

import torch

import diffusion_schemes as ds
from diffusion_schemes.discretizations import check_sigmas
from diffusion_schemes.sampling import sampler
from diffusion_schemes.tensors import check_inside

from ._backbones import BACKBONES, InlineEDM, InlineEDMCalledAsAModel, InlinePrecomputed, edm_coefficients
from ._settings import Settings
from ._timing import _block, calibrate, compare, fmt_ratio, fmt_time, paired
from .training import SIGMA_DATA, inline_edm_loss

AIM = 1.05
STEPS = 8
CLOCK = time.process_time
TINY = "tiny MLP, 2-D"


def _edm(name: str):
    """The backbone of ``name`` (seeded), its shape, EDM's schedule and preconditioner built by name, and EDM inline."""
    torch.manual_seed(0)
    cls, shape = BACKBONES[name]
    backbone = cls()
    schedule = ds.create("noise_schedule", {"name": "edm", "sigma_data": SIGMA_DATA})
    precond = ds.create("preconditioner", {"name": "edm", "sigma_data": SIGMA_DATA}, model=backbone)
    return backbone, shape, schedule, precond, InlineEDM(backbone, SIGMA_DATA)


def inline_heun(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun's method on ``dx/dsigma = (x - D) / sigma`` (Karras et al. 2022, Algorithm 1), Euler on the last step."""
    ones = x.new_ones(x.shape[0])
    for i in range(sigmas.shape[0] - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - model(x, s * ones)) / s
        x_next = x + (s_next - s) * d
        if i < sigmas.shape[0] - 2:
            d_next = (x_next - model(x_next, s_next * ones)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    return x


def _compile(fn, settings: Settings):
    """``fn`` compiled with ``fullgraph=True, dynamic=False``: a module in place (``module.compile()``, which
    compiles its ``__call__`` and puts no wrapper module in front of it, as the user guide advises), a function
    through ``torch.compile``."""
    options = {"backend": settings.backend, "fullgraph": True, "dynamic": False}
    if isinstance(fn, torch.nn.Module):
        fn.compile(**options)
        return fn
    return torch.compile(fn, **options)


def _first_calls(calls: list, first: str) -> None:
    """Call each of ``calls`` once (the library's first, then the inline code's), in that order or, with ``first``
    "inline", reversed: compiled, the first call compiles, and compile order changes a compiled call's time (the
    module a process compiles first runs its guards slower: :func:`_order_effect`), so each compiled case runs in
    both orders (:func:`_both_orders`)."""
    for call in calls if first == "ours" else calls[::-1]:
        call()


def _forward(name: str, batch: int, compiled: bool, settings: Settings, first: str = "ours") -> dict[str, object]:
    backbone, shape, _, ours, inline = _edm(name)
    pre = InlinePrecomputed(backbone)
    # the same preconditioner without its per-call check of the noise levels: what that check costs
    unchecked = ds.create("preconditioner", {"name": "edm", "sigma_data": SIGMA_DATA}, model=backbone, validate=False)
    modules = ours, inline
    # the inline formula behind the library's model signature (x, t, condition=None, **model_kwargs)
    as_model = InlineEDMCalledAsAModel(backbone, SIGMA_DATA)
    if compiled:
        ours, inline, pre, unchecked, as_model = (_compile(m, settings) for m in (ours, inline, pre, unchecked, as_model))
    x = torch.randn(batch, *shape)
    sigma = torch.exp(torch.randn(batch) * 1.2 - 1.2)
    coeffs = edm_coefficients(sigma, x.ndim, SIGMA_DATA)
    with torch.no_grad():
        if compiled:
            _first_calls([lambda: ours(x, sigma), lambda: unchecked(x, sigma), lambda: inline(x, sigma),
                          lambda: pre(x, *coeffs), lambda: as_model(x, sigma)], first)
        torch.testing.assert_close(ours(x, sigma), inline(x, sigma), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unchecked(x, sigma), inline(x, sigma), rtol=1e-5, atol=1e-5)
        vs_inline = compare(lambda: ours(x, sigma), lambda: inline(x, sigma), settings.repeats, settings.block_s, CLOCK)
        vs_pre = compare(lambda: ours(x, sigma), lambda: pre(x, *coeffs), settings.repeats, settings.block_s, CLOCK)
        check = compare(lambda: ours(x, sigma), lambda: unchecked(x, sigma), settings.repeats, settings.block_s, CLOCK)
        result = {"aim": vs_inline, "floor": vs_pre, "check": check}
        if compiled:  # the inline formula behind the library's model signature, against the plain inline module
            torch.testing.assert_close(as_model(x, sigma), inline(x, sigma), rtol=0, atol=0)
            result["signature"] = compare(lambda: as_model(x, sigma), lambda: inline(x, sigma), settings.repeats,
                                          settings.block_s, CLOCK)
        if compiled:  # the same pair with dynamo's guard evaluation skipped (a diagnostic: unsafe for use, since a
            # changed input or attribute would then run a graph traced for another): what the guards cost ours
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                result["unguarded"] = compare(lambda: ours(x, sigma), lambda: inline(x, sigma), settings.repeats,
                                              settings.block_s, CLOCK)
        if compiled:  # dynamo's guard evaluation before each call of the compiled graph, ours against inline
            frames = ({"self": modules[0], "x": x, "t": sigma, "condition": None, "model_kwargs": {}},
                      {"self": modules[1], "x": x, "sigma": sigma})
            guards = [_InlineLossModule.guards(type(m).forward.__code__, f) for m, f in zip(modules, frames)]
            if None not in guards:
                result["guards"] = compare(*guards, settings.repeats, settings.block_s, CLOCK)
    return result


class _InlineLossModule(torch.nn.Module):
    """The inline EDM loss inside an ``nn.Module``: what a module costs to call, eager and compiled."""

    def __init__(self, inline: torch.nn.Module) -> None:
        super().__init__()
        self.inline = inline

    def forward(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return inline_edm_loss(self.inline, x0, sigma, noise)

    @staticmethod
    def guards(code, frame: dict[str, object]):
        """The guard check dynamo runs before each call of the graph it compiled from ``code`` (the cache entry whose
        guards ``frame``'s values pass), as a callable, for the forward and the loss rows; None where torch does not
        expose it (a private interface)."""
        try:
            from torch._dynamo.eval_frame import _debug_get_cache_entry_list

            passing = [e.guard_manager for e in _debug_get_cache_entry_list(code) if e.guard_manager.check(frame)]
        except (ImportError, AttributeError, TypeError):
            return None
        return (lambda: passing[0].check(frame)) if passing else None


def _loss(name: str, batch: int, compiled: bool, settings: Settings, first: str = "ours") -> dict[str, object]:
    backbone, shape, schedule, precond, inline = _edm(name)
    loss_fn = ds.MSEDSMLoss(precond, schedule)
    reference = lambda x0, sigma, noise: inline_edm_loss(inline, x0, sigma, noise)  # noqa: E731
    as_module = _InlineLossModule(inline)
    originals = loss_fn, reference
    if compiled:
        # through torch.compile's wrapper module: what compiling the loss that way adds to compiling it in place
        wrapped = torch.compile(ds.MSEDSMLoss(precond, schedule), backend=settings.backend, fullgraph=True,
                                dynamic=False)
        loss_fn, reference, as_module = (_compile(loss_fn, settings), _compile(reference, settings),
                                         _compile(as_module, settings))
    x0 = torch.randn(batch, *shape) * SIGMA_DATA
    sigma = schedule.sample_time(batch, generator=torch.Generator().manual_seed(1)).to(torch.float32)
    noise = torch.randn_like(x0)
    params = list(backbone.parameters())

    def step(fn):
        def run():
            for p in params:
                p.grad = None
            fn().backward()
        return run

    ours = step(lambda: loss_fn(x0, t=sigma, noise=noise))
    ref = step(lambda: reference(x0, sigma, noise))
    if compiled:  # a whole step each: the backward compiles on its first call
        _first_calls([ours, step(lambda: wrapped(x0, t=sigma, noise=noise)), ref,
                      step(lambda: as_module(x0, sigma, noise))], first)
    torch.testing.assert_close(loss_fn(x0, t=sigma, noise=noise), reference(x0, sigma, noise), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(as_module(x0, sigma, noise), reference(x0, sigma, noise), rtol=1e-4, atol=1e-6)
    # the same inline loss called as a module against called as a function: the module call's own cost
    in_module = step(lambda: as_module(x0, sigma, noise))
    module = compare(in_module, ref, settings.repeats, settings.block_s, CLOCK)
    result = {"aim": compare(ours, ref, settings.repeats, settings.block_s, CLOCK), "module": module,
              # ours against the same inline loss inside a module: the library's own cost, the module call on both sides
              "vs_module": compare(ours, in_module, settings.repeats, settings.block_s, CLOCK)}
    if compiled:
        torch.testing.assert_close(wrapped(x0, t=sigma, noise=noise), reference(x0, sigma, noise), rtol=1e-4, atol=1e-6)
        result["wrapper"] = compare(step(lambda: wrapped(x0, t=sigma, noise=noise)), ours, settings.repeats,
                                    settings.block_s, CLOCK)
        # dynamo's guard evaluation before each call of the compiled graph, ours against the inline function
        frames = ({"self": originals[0], "x0": x0, "t": sigma, "condition": None, "noise": noise, "generator": None,
                   "model_kwargs": {}}, {"x0": x0, "sigma": sigma, "noise": noise, "inline": inline})
        guards = [_InlineLossModule.guards(code, f) for code, f in
                  zip((type(originals[0]).forward.__code__, originals[1].__code__), frames)]
        if None not in guards:
            result["guards"] = compare(*guards, settings.repeats, settings.block_s, CLOCK)
    else:  # the loss's one check of its times a step, timed on its own
        lo, hi = schedule.t_limits
        check = lambda: check_inside(sigma, lo, hi, ds.DomainError)  # noqa: E731
        number = calibrate(check, settings.block_s, CLOCK)
        result["check_s"] = min(_block(check, number, CLOCK) for _ in range(max(3, settings.repeats // 3)))
    return result


@contextlib.contextmanager
def _one_thread():
    """Both sides on one thread: idle OpenMP workers spin, and on a shared machine their spinning, not the
    work, decides the CPU time of small kernels (solver-loop ratios of 0.2 to 8 in one run at two threads,
    and a tiny loss step's CPU time counted about twice its wall time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _loop(name: str, batch: int, compiled: bool, settings: Settings, first: str = "ours") -> dict[str, object]:
    backbone, shape, schedule, ours, inline = _edm(name)
    unvalidated = ds.create("preconditioner", {"name": "edm", "sigma_data": SIGMA_DATA}, model=backbone,
                            validate=False)
    if compiled:
        ours, inline, unvalidated = (_compile(m, settings) for m in (ours, inline, unvalidated))
    latents = schedule.init_latents((batch, *shape), generator=torch.Generator().manual_seed(0))
    sigmas = schedule.sigmas(STEPS).to(torch.float32)
    nfe = 2 * STEPS - 1
    run_ours = lambda: ds.sample(ours, latents, schedule, STEPS, solver="heun")  # noqa: E731
    with torch.no_grad():
        if compiled:
            _first_calls([run_ours, lambda: ds.sample(unvalidated, latents, schedule, STEPS, solver="heun"),
                          lambda: inline_heun(inline, latents, sigmas)], first)
        result = run_ours()
        assert result.nfe == nfe
        torch.testing.assert_close(result.samples, inline_heun(inline, latents, sigmas), rtol=1e-4, atol=1e-4)
        timing = compare(run_ours, lambda: inline_heun(inline, latents, sigmas), settings.repeats, settings.block_s,
                         CLOCK)
    timing["per_eval_extra_s"] = (timing["ours_s"] - timing["reference_s"]) / nfe
    out = {"aim": timing, "nfe": nfe}
    if name == TINY:  # where a microsecond shows: what the finite check and the grid cost of that
        with torch.no_grad():
            out["unchecked"] = compare(lambda: ds.sample(ours, latents, schedule, STEPS, solver="heun", check_finite=False),
                                       lambda: inline_heun(inline, latents, sigmas), settings.repeats, settings.block_s,
                                       CLOCK)
        if compiled:  # compiled, ds.sample calls the compiled forward, whose graph holds the check of the levels
            with torch.no_grad():  # both sides without autograd, as in the aim (the inline loop would record it)
                out["unvalidated"] = compare(lambda: ds.sample(unvalidated, latents, schedule, STEPS, solver="heun"),
                                             lambda: inline_heun(inline, latents, sigmas), settings.repeats,
                                             settings.block_s, CLOCK)
        grid = lambda: check_sigmas(schedule.sigmas(STEPS))  # noqa: E731
        out["grid_s"] = min(timeit.repeat(grid, number=100, repeat=5, timer=CLOCK)) / 100
        kept = lambda: sampler._grid(schedule, STEPS, None, None)  # noqa: E731  # what ds.sample pays for it
        out["kept_grid_s"] = min(timeit.repeat(kept, number=100, repeat=5, timer=CLOCK)) / 100
    return out


def _loop_notes(results: list[dict[str, object]]) -> list[str]:
    """Where the solver loop's time goes beyond the inline loop, from the tiny rows' extra measurements."""
    tiny = [r for r in results if r["path"] == "solver loop (Heun)" and "unchecked" in r]
    if not tiny:
        return []
    parts = []
    for r in tiny:
        aim, unchecked = r["aim"], r["unchecked"]
        watch = (aim["ours_s"] - unchecked["ours_s"]) / r["nfe"]
        part = (f"batch {r['batch']} {r['mode']}: {fmt_ratio(aim)} as run, {fmt_ratio(unchecked)} with "
                f"`check_finite=False` (the check: {watch * 1e6:+.1f} us per evaluation)")
        if "unvalidated" in r:
            part += (f", {fmt_ratio(r['unvalidated'])} with the preconditioner built `validate=False` before "
                     "compiling (its forward's check of the noise levels left out of the graph)")
        parts.append(part)
    grid_s, kept_s = tiny[0]["grid_s"], tiny[0]["kept_grid_s"]
    return [
        "Solver loop, what is left at the tiny size, where one evaluation of the compiled network costs about "
        "50 us: `ds.sample` does per call what the inline loop does not. It takes the grid (computing and checking "
        f"it, `schedule.sigmas({STEPS})` and `check_sigmas`, costs {grid_s * 1e6:.0f} us and is done once: later "
        f"calls copy the kept grid, {kept_s * 1e6:.1f} us; the inline loop is handed its grid), binds and checks "
        "the model and the condition, and checks the latents before the first step and the samples after the last "
        "for NaN and inf (one sum and one read each; only a run that ends non-finite is run again, watched, to "
        "name the first bad step). " + "; ".join(parts) + ". Per evaluation "
        "the library calls the preconditioner's `precondition` directly (the grid is checked once a call), so "
        "eager it does fewer operations than the inline EDM formula, and Heun's loop takes each step's coefficients "
        "as numbers from the grid in host memory, where the inline loop computes them with tensor operations on "
        "single numbers; compiled, the preconditioner is reached through "
        "its compiled call (compiled in place), whose graph holds the forward's check of its noise levels, and that check and "
        "the Python of the loop are what remains. At the conv size these costs are below the noise.",
    ]


def _both_orders(fn, name: str, batch: int, settings: Settings) -> dict[str, object]:
    """A compiled case run twice, the library's modules compiled first and then the inline code's first (each run
    from a reset dynamo), its comparisons :func:`paired` repeat by repeat: compile order alone changes a compiled
    call's time at the tiny size (:func:`_order_effect`), and the two orders bias each ratio in opposite directions."""
    runs = []
    for first in ("ours", "inline"):
        torch._dynamo.reset()
        runs.append(fn(name, batch, True, settings, first=first))
    out = {}
    for key, value in runs[0].items():
        if isinstance(value, dict) and "ratios" in value:
            out[key] = paired(value, runs[1][key])
        elif key.endswith("_s"):  # a time measured on its own in each run: the faster
            out[key] = min(value, runs[1][key])
        else:
            out[key] = value
    if "nfe" in out:
        out["aim"]["per_eval_extra_s"] = (out["aim"]["ours_s"] - out["aim"]["reference_s"]) / out["nfe"]
    return out


def _copy_of(cls: type, name: str) -> type:
    """A subclass of ``cls`` whose ``forward`` is the same code as a code object of its own: dynamo keeps its
    compiled graphs and guards per code object, so two of them compile apart (two instances of one class would
    share one cache entry)."""
    f = cls.forward
    forward = types.FunctionType(f.__code__.replace(co_name=name), f.__globals__, name, f.__defaults__, f.__closure__)
    return type(name, (cls,), {"forward": forward})


def _order_effect(settings: Settings) -> dict[str, object]:
    """What compile order alone does to a compiled call, run as a process's first compilation: two copies of the
    inline EDM module (same code, same backbone, tiny MLP, batch 1), the one compiled first against the one compiled
    second, with dynamo's guard evaluation and without."""
    torch._dynamo.reset()
    backbone, shape, *_ = _edm(TINY)
    first, second = (_compile(_copy_of(InlineEDM, n)(backbone, SIGMA_DATA), settings) for n in ("first", "second"))
    x = torch.randn(1, *shape)
    sigma = torch.exp(torch.randn(1) * 1.2 - 1.2)
    with torch.no_grad():
        torch.testing.assert_close(first(x, sigma), second(x, sigma), rtol=0, atol=0)  # compiles first, then second
        guarded = compare(lambda: first(x, sigma), lambda: second(x, sigma), settings.repeats, settings.block_s, CLOCK)
        with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
            unguarded = compare(lambda: first(x, sigma), lambda: second(x, sigma), settings.repeats, settings.block_s,
                                CLOCK)
    return {"guarded": guarded, "unguarded": unguarded}


PATHS = {"preconditioner forward": _forward, "loss step (forward + backward)": _loss, "solver loop (Heun)": _loop}


def _check_note(results: list[dict[str, object]]) -> str:
    """What the forward's default check of its noise levels costs per call (ours minus ``validate=False``), and,
    compiled, dynamo's guard evaluation per call, ours against inline."""
    rows = [r for r in results if "check" in r]
    cost = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {r['mode']} "
                     f"{(r['check']['ours_s'] - r['check']['reference_s']) * 1e6:+.1f} us "
                     f"({r['check']['ratio']['median']:.3f}x)" for r in rows)
    guards = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {r['guards']['ours_s'] * 1e6:.1f} / "
                       f"{r['guards']['reference_s'] * 1e6:.1f} us" for r in rows if "guards" in r) or "not measured"
    unguarded = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {fmt_ratio(r['unguarded'])}"
                          for r in rows if "unguarded" in r and r["backbone"] == TINY) or "not measured"
    in_call = "; ".join(  # a call's time with its guards minus without them, ours / inline
        f"{r['backbone'].split(',')[0]} b{r['batch']} {(r['aim']['ours_s'] - r['unguarded']['ours_s']) * 1e6:.1f} / "
        f"{(r['aim']['reference_s'] - r['unguarded']['reference_s']) * 1e6:.1f} us"
        for r in rows if "unguarded" in r and r["backbone"] == TINY) or "not measured"
    signature = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {fmt_ratio(r['signature'])}, "
                          f"{(r['signature']['ours_s'] - r['signature']['reference_s']) * 1e6:+.1f} us"
                          for r in rows if "signature" in r) or "not measured"
    return ("Preconditioner forward, the cost of its default check of the noise levels per call (checked minus the "
            "same preconditioner built with `validate=False`): " + cost + ". Eager on the CPU the check is a clamp "
            "and `torch.equal` (the values are in host memory); compiled, and on an accelerator, a clamp, a "
            "comparison and a reduction ending in `torch._assert_async`, which inductor fuses into the kernel that "
            "computes the coefficients (no extra kernel: one more buffer of one element). Compiled, dynamo also "
            "evaluates its guards before each call of the graph (one test for every attribute, function and global "
            "the traced Python read; ours / inline, timed on their own, per call: " + guards + "). In a call, between "
            "calls of the network, they cost more than timed on their own (a call with them minus one without, "
            "ours / inline: " + in_call + "; differences of single medians, so noisier than the ratios, and lost in the "
            "noise of the conv net's calls): with guard evaluation skipped (`torch.compiler.set_stance(skip_guard_eval_unsafe="
            "True)`, a diagnostic only, since a changed input would then run a graph traced for another), ours / "
            "inline is " + unguarded + ". The library's forward reads more than the inline formula: its signature, "
            "the check of its input (a tensor or a number, one value per sample or one for all, cast to the compute "
            "dtype), the check of the noise levels, the check of the backbone's output, and the scheme's methods; "
            "each helper it calls is one more guard, and a helper of another module one more on that module and one per "
            "name it reads there, so the traced path calls two helpers of its own module and `tensors.cast`, which "
            "reads no global, and none of them reads `torch` (another module reading `torch` besides the backbone's "
            "adds a check, in Python, that both are the same). "
            "The signature every model has in the library, "
            "`forward(x, t, condition=None, **model_kwargs)`, costs a compiled call on its own: the same inline "
            "formula behind it, against the plain inline module (" + signature + "). Where the forward misses the aim at the tiny "
            "size, these are the difference; a loop that checks its noise levels once can build the preconditioner "
            "with `validate=False` (`ds.create`, `spec.build`, the class, or the attribute).")


def _order_note(order: dict[str, object] | None, results: list[dict[str, object]]) -> str:
    """What compile order alone does to a compiled call, and each compiled aim's figure in either order."""
    if order is None:
        return "Compile order: not measured."
    guarded, unguarded = order["guarded"], order["unguarded"]
    measured = (f"{fmt_ratio(guarded)} ({(guarded['ours_s'] - guarded['reference_s']) * 1e6:+.1f} us), "
                f"{fmt_ratio(unguarded)} with guard evaluation skipped")
    runs = "; ".join(f"{r['path'].split(' (')[0]}, {r['backbone'].split(',')[0]} b{r['batch']}: "
                     f"{r['aim']['runs'][0]['median']:.3f} and {r['aim']['runs'][1]['median']:.3f}"
                     for r in results if "runs" in r["aim"])
    slower = guarded["ratio"]["q1"] > 1.0
    in_guards = slower and unguarded["ratio"]["median"] < guarded["ratio"]["q1"]
    finding = ("the module compiled first is called slower than one compiled after it, for no difference of its own"
               if slower else "whether the module compiled first is called slower than one compiled after it (not "
               "beyond the noise in this run)")
    where = (" The difference is in dynamo's guard evaluation before each call (it goes with the guards skipped), so "
             "it is torch's, and it would count against whichever side of a comparison a process compiles first."
             if in_guards else "")
    return ("Compile order: in a process, " + finding + ": two copies of the inline EDM module (the same code, "
            "backbone and inputs), compiled before anything else is in this run, the one compiled first against the "
            "one compiled second, tiny MLP, batch 1: " + measured + "." + where + " The cases above are compiled "
            "after it, and each of them is run twice, each time from a reset dynamo: once with the library's modules "
            "compiled first, once with the inline code's first (what is left of an order effect after a process's "
            "first compilation then counts against each side once); each ratio is the geometric mean of the two runs' ratios, repeat "
            "by repeat (a factor that slows one side in one run and the other side in the other cancels), and each "
            "time the geometric mean of the two runs' medians. The two runs' own medians of ours / inline, library "
            "compiled first and inline compiled first: " + runs + ".")


def _loss_note(results: list[dict[str, object]]) -> str:
    """What the loss step adds over the inline loss, and the costs the inline function does not pay, in us."""
    rows = [r for r in results if "module" in r]
    def us(r, key):  # ours (or the inline module) minus the inline function, per step
        return (r[key]["ours_s"] - r[key]["reference_s"]) * 1e6
    extra = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {r['mode']} {us(r, 'aim'):+.0f}" for r in rows)
    module = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {r['mode']} {us(r, 'module'):+.0f}" for r in rows)
    guards = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {r['guards']['ours_s'] * 1e6:.1f} / "
                       f"{r['guards']['reference_s'] * 1e6:.1f}" for r in rows if "guards" in r) or "not measured"
    wrapper = "; ".join(f"{r['backbone'].split(',')[0]} b{r['batch']} {fmt_ratio(r['wrapper'])}, {us(r, 'wrapper'):+.0f} us"
                        for r in rows if "wrapper" in r) or "not measured"
    checks = [r["check_s"] * 1e6 for r in rows if "check_s" in r]
    check = f"{min(checks):.1f} to {max(checks):.1f} us" if checks else "not measured"
    return (
        "Loss step, what the library adds per step (ours minus inline, us): " + extra + ". Costs the inline "
        "function does not pay, measured in this run: calling a module rather than a function (the inline loss "
        "itself inside an `nn.Module`, the column `inline loss as a module / as a function`; us per step: " + module + "), which compiled is "
        "`Module.__call__` and dynamo's frame around the compiled graph; compiled, dynamo's guard evaluation before each call of the graph (one test for "
        "every attribute, function and global the traced Python read: the loss reads its schedule, weighting and "
        "preconditioner; us per step, ours / inline function: " + guards + "); and the loss's one check of its "
        f"times a step ({check} eager: a clamp and `torch.equal` on the CPU; compiled, fused into the first "
        "kernel and ending in `torch._assert_async`, no host read), which refuses a bad time with its value named. "
        "The loss runs the same tensor operations as the inline formula otherwise (its autograd graph has the "
        "same nodes, its backward the same kernels, and compiled, the same fused kernels and saved tensors); at "
        "the tiny size a step is about 40 small operations, so these fixed microseconds are the percent points "
        "above 1.0 there, and they vanish at the conv size. Compiled, the loss and the inline module are compiled "
        "in place (`loss_fn.compile()`); through `torch.compile(loss_fn)`, the wrapper module that returns, a step "
        "costs more (the same loss, wrapped / in place: " + wrapper + "): a second `Module.__call__` and the "
        "wrapper's own `forward`, torch's cost, which the user guide's advice to compile a module in place avoids."
    )


def _module_call_explains(r: dict[str, object]) -> bool:
    """Whether a loss step's miss is the cost of calling an ``nn.Module`` rather than a function: against the same
    inline loss inside a module, compiled alike, ours is within the aim, and that module costs the inline function
    more than the noise of the figure (its interquartile range starts above 1)."""
    return ("vs_module" in r and r["vs_module"]["ratio"]["median"] <= AIM and r["module"]["ratio"]["q1"] > 1.0)


MODULE_CAUSE = ("calling an `nn.Module` rather than a function (torch's `Module.__call__` and, compiled, dynamo's "
                "frame around the graph), which the inline loss pays alike inside a module (the table's last two "
                "columns: that module against the function, and ours against that module, within the aim)")


def _aim(path: str, found: list[tuple[str, bool]]) -> dict[str, object]:
    """The aim of one hot path: met, or missed with the cases; caused outside the library where every missed case is
    explained by the module call (the loss step)."""
    aim = {"aim": f"{path} within 5% of inline code, every size", "met": not found,
           "detail": "; ".join(detail for detail, _ in found) or "all cases"}
    if found and all(explained for _, explained in found):
        aim["cause"] = MODULE_CAUSE
    return aim


def run(settings: Settings) -> dict[str, object]:
    sizes = [(name, batch) for name in BACKBONES for batch in (1, 64)]
    if settings.quick:  # a smoke run: the smallest case of each size
        sizes = [(name, 1) for name in BACKBONES]
    results, order = [], None
    with _one_thread():
        for path, fn in PATHS.items():
            for compiled in (False, True):
                for name, batch in sizes:
                    if compiled and order is None:  # this process's first compilation: measured, and no case's
                        order = _order_effect(settings)
                    torch._dynamo.reset()
                    r = _both_orders(fn, name, batch, settings) if compiled else fn(name, batch, False, settings)
                    results.append({"path": path, "backbone": name, "batch": batch,
                                    "mode": "compiled" if compiled else "eager", **r})
    rows, misses = [], {path: [] for path in PATHS}
    for r in results:
        aim = r["aim"]
        med = aim["ratio"]["median"]
        extra = aim["ours_s"] - aim["reference_s"]
        per = f"{extra / r['nfe'] * 1e6:+.1f} us per evaluation" if "nfe" in r else f"{extra * 1e6:+.1f} us per call"
        if med > AIM:
            detail = f"{r['backbone']}, batch {r['batch']}, {r['mode']}: {med:.3f}x ({per})"
            if "vs_module" in r:
                detail += f"; against the inline loss as a module {fmt_ratio(r['vs_module'])}"
            if "runs" in aim:
                detail += (f"; library compiled first {aim['runs'][0]['median']:.3f}, inline compiled first "
                           f"{aim['runs'][1]['median']:.3f}")
            if "unguarded" in r:
                detail += f"; without dynamo's guard evaluation {fmt_ratio(r['unguarded'])}"
            misses[r["path"]].append((detail, _module_call_explains(r)))
        rows.append({
            "path": r["path"], "backbone": r["backbone"], "batch": str(r["batch"]), "mode": r["mode"],
            "ours": fmt_time(aim["ours_s"]), "inline": fmt_time(aim["reference_s"]),
            "ours / inline [IQR]": fmt_ratio(aim), "library time": per,
            "aim <= 1.05": "met" if med <= AIM else f"missed by {(med - AIM) * 100:.0f} points",
            "forward / precomputed coefficients [IQR]": fmt_ratio(r["floor"]) if "floor" in r else "-",
            "inline loss as a module / as a function [IQR]": fmt_ratio(r["module"]) if "module" in r else "-",
            "ours / inline loss as a module [IQR]": fmt_ratio(r["vs_module"]) if "vs_module" in r else "-",
        })
    graph = ("not run: no GPU (`torch.cuda.is_available()` is False on this machine)" if not torch.cuda.is_available()
             else "see the CUDA section")
    notes = [
        "Reading the table: `ours / inline` compares the library with the same formula written inline, which is the "
        "aim; the forward's column `forward / precomputed coefficients` compares it with the formula whose "
        "coefficients were computed before the call, a floor that any code computing them from sigma pays for (about "
        "eight elementwise operations on a (B, 1) tensor). The loss step's last two columns split its figure: the "
        "inline loss inside an `nn.Module` against the inline function (what calling a module costs, torch's), and "
        "ours against that module, compiled alike (the library's own cost, the module call on both sides); a loss "
        "miss that the module call accounts for is marked as caused outside the library. The forward's default domain check (finite noise levels > 0) runs on the tensor's device "
        "with `torch._assert_async`, three operations and no host read; `precond.validate = False` leaves it out for "
        "a loop that checks its noise levels once. The loss checks its times once a step and calls the "
        "preconditioner without a second check; `ds.sample` checks its grid once a call.",
        f"CUDA-graph capture of a whole sampling grid: {graph}.",
        _order_note(order, results),
        _loss_note(results),
        _check_note(results),
        *_loop_notes(results),
    ]
    return {
        "id": "aims",
        "title": "0. Overhead aims: preconditioner, loss step, solver loop against inline code",
        "description": (
            "Each hot path against the same formula written inline (EDM, Karras et al. 2022, Table 1), eager and "
            f"compiled ({settings.backend_note}), at the tiny and the conv size. Solver loop: `ds.sample` with Heun, "
            f"{STEPS} steps ({2 * STEPS - 1} evaluations), against the inline Heun loop on the same grid; the "
            "library time is per evaluation. Every path runs on one thread, both sides (idle OpenMP workers "
            "spinning on a shared machine would otherwise decide the CPU time of small kernels). Ratios: median of interleaved blocks of CPU time "
            "[interquartile range]; compiled, each case is run in both compile orders and the two runs are "
            "combined repeat by repeat (see the note on compile order)."
        ),
        "columns": list(rows[0]),
        "rows": rows,
        "notes": notes,
        "aims": [_aim(path, found) for path, found in misses.items()],
        "data": results,
        "order_effect": order,
    }
