"""Hot paths read no device value on the host.

A read of a tensor's value from Python (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``,
``operator.index(t)``, ``.tolist()``, ``.cpu()``) is a device synchronisation on an accelerator:
it stalls the pipeline and keeps a CUDA graph from being captured. These tests count such reads
during CPU runs of the preconditioner forward, a loss step with its backward and the sampling
loop, by wrapping those methods of ``torch.Tensor``. The domain checks of these paths
(``diffusion_schemes.tensors.check_inside``) run as ``torch._assert_async`` on an accelerator and
under ``torch.compile``, which does not synchronise; on the CPU in eager mode they are a clamp and
``torch.equal`` on values already in host memory, where there is no device to wait for. No counter
here sees either. Where a GPU is present the same paths run under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib
import traceback

import pytest
import torch

import diffusion_schemes as ds

READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")


class HostReads:
    """The host reads made while counting, each with the innermost frame of this repository that made it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def where(self) -> list[str]:
        return [f"{name} at {site}" for name, site in self.calls]


@contextlib.contextmanager
def counting_host_reads(monkeypatch):
    reads = HostReads()
    with monkeypatch.context() as patch:
        for name in READS:
            original = getattr(torch.Tensor, name)

            def wrapped(self, *args, _name=name, _original=original, **kwargs):
                frames = [f for f in traceback.extract_stack()[:-1] if "site-packages" not in f.filename]
                site = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
                reads.calls.append((_name, site))
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, wrapped)
        yield reads


def _backbone(dim: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(dim + 1, 16), torch.nn.SiLU(), torch.nn.Linear(16, dim))


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _backbone()

    def forward(self, x, c_noise, condition=None):
        return self.net(torch.cat([x, c_noise[:, None].to(x.dtype)], dim=1))


def test_the_counter_catches_a_planted_read(monkeypatch):
    x = torch.tensor([1.0, 2.0])
    with counting_host_reads(monkeypatch) as reads:
        x.sum().item()
        bool(x.min() > 0)
        float(x[0])
        x.tolist()
    assert [name for name, _ in reads.calls] == ["item", "__bool__", "__float__", "tolist"]
    assert all("test_host_sync.py" in site for _, site in reads.calls)
    assert torch.Tensor.item is not None and x.sum().item() == 3.0  # restored after the block


def test_the_counter_catches_a_read_planted_in_a_preconditioner(monkeypatch):
    class Syncing(ds.BaseAffinePreconditioner):
        def compute_coefficients(self, sigma):
            if sigma.max().item() > 100:  # a host read per call, the kind the hot paths must not make
                raise ValueError("too noisy")
            one = torch.ones_like(sigma)
            return one, sigma.log(), sigma, one

    precond = Syncing(MLP())
    x, sigma = torch.randn(4, 2), torch.rand(4) + 0.1
    with counting_host_reads(monkeypatch) as reads, torch.no_grad():
        precond(x, sigma)
    assert [name for name, _ in reads.calls] == ["item"]


@pytest.mark.parametrize("scheme", ["edm", "vp", "ve", "iddpm"])
def test_preconditioner_forward_reads_nothing_on_the_host(monkeypatch, scheme):
    precond = ds.create("preconditioner", scheme, model=MLP())
    schedule = ds.create("noise_schedule", scheme)
    x = torch.randn(8, 2)
    t = schedule.sample_time(8, generator=torch.Generator().manual_seed(0))
    sigma = schedule.noise_level(t)
    with torch.no_grad():
        precond(x, t), precond.forward_sigma(x, sigma)  # warm-up (one-time caches)
        with counting_host_reads(monkeypatch) as reads:
            precond(x, t)
            precond.forward_sigma(x, sigma)
            precond.precondition(x, sigma)
    assert reads.where() == []


@pytest.mark.parametrize("scheme", ["edm", "vp", "ve", "iddpm"])
def test_loss_step_with_backward_reads_nothing_on_the_host(monkeypatch, scheme):
    precond = ds.create("preconditioner", scheme, model=MLP())
    schedule = ds.create("noise_schedule", scheme)
    loss_fn = ds.MSEDSMLoss(precond, schedule)
    x0 = torch.randn(16, 2)
    generator = torch.Generator().manual_seed(0)
    loss_fn(x0, generator=generator).backward()  # warm-up
    t = schedule.sample_time(16, generator=generator)
    with counting_host_reads(monkeypatch) as reads:
        loss_fn(x0, generator=generator).backward()  # times and noise drawn by the loss
        loss_fn(x0, t=t, noise=torch.randn_like(x0)).backward()  # times given by the caller
    assert reads.where() == []


def test_schedule_log_snr_and_noise_level_read_nothing_on_the_host(monkeypatch):
    schedule = ds.create("noise_schedule", "vp")
    t = schedule.sample_time(16, generator=torch.Generator().manual_seed(0))
    schedule.get_log_snr(t, training=True), schedule.noise_level(t)
    with counting_host_reads(monkeypatch) as reads:
        lam = schedule.get_log_snr(t, training=True)
        schedule.noise_level(t)
        schedule.get_t_from_log_snr(lam, training=True)
    assert reads.where() == []


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m", "euler_ancestral", "edm_stochastic_heun"])
def test_sampling_reads_on_the_host_only_once_per_call_not_per_step(monkeypatch, solver):
    """The grid is checked once per ``ds.sample`` call (reading it on the host); the steps read nothing."""
    precond = ds.create("preconditioner", "edm", model=MLP())
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((4, 2), generator=torch.Generator().manual_seed(0))
    ds.sample(precond, latents, schedule, 3, solver=solver, generator=torch.Generator().manual_seed(1))
    counts = {}
    for steps in (14, 30):  # both above 12, where the one grid check shows its ends only
        with counting_host_reads(monkeypatch) as reads:
            ds.sample(precond, latents, schedule, steps, solver=solver, generator=torch.Generator().manual_seed(1))
        counts[steps] = reads.where()
    assert len(counts[30]) == len(counts[14]), "reads that grow with the number of steps:\n" + "\n".join(
        sorted(set(counts[30]) - set(counts[14])) or counts[30])



@pytest.mark.parametrize("solver", ["euler_ancestral", "edm_stochastic_heun"])
def test_per_sample_generators_read_nothing_per_step(monkeypatch, solver):
    """A generator per sample: the noise is drawn in a loop over the generators, with no host read per step."""
    precond = ds.create("preconditioner", "edm", model=MLP())
    schedule = ds.create("noise_schedule", "edm")
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(4)]  # noqa: E731
    latents = schedule.init_latents((4, 2), generator=gens())
    counts = {}
    for steps in (14, 30):
        with counting_host_reads(monkeypatch) as reads:
            ds.sample(precond, latents, schedule, steps, solver=solver, generator=gens())
        counts[steps] = reads.where()
    assert len(counts[30]) == len(counts[14]), "reads that grow with the number of steps:\n" + "\n".join(
        sorted(set(counts[30]) - set(counts[14])) or counts[30])

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: torch.cuda.set_sync_debug_mode")


@cuda
def test_hot_paths_do_not_synchronise_the_gpu():
    precond = ds.create("preconditioner", "edm", model=MLP().cuda())
    schedule = ds.create("noise_schedule", "edm")
    loss_fn = ds.MSEDSMLoss(precond, schedule)
    x0 = torch.randn(16, 2, device="cuda")
    t = schedule.sample_time(16, device="cuda")
    loss_fn(x0, t=t).backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            precond(x0, t)
        loss_fn(x0, t=t).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


GUIDED_SOLVERS = ["heun", "euler", "dpm_2", "lms", "edm_stochastic_heun", "dpm_2_ancestral", "dpmpp_2m", "dpm_adaptive"]


@pytest.mark.parametrize("solver", GUIDED_SOLVERS)
def test_guided_sampling_with_an_interval_reads_nothing_per_step(monkeypatch, solver):
    """The loop tells the guided denoiser each step's levels (the grid read once per call); no evaluation reads."""
    schedule = ds.create("noise_schedule", "edm")
    model = lambda x, t, condition=None: torch.zeros_like(x) if condition is None else condition.expand_as(x)  # noqa: E731
    latents = schedule.init_latents((2, 3), generator=torch.Generator().manual_seed(0))
    condition = torch.tensor([[1.0], [2.0]])
    guidance = ds.Guidance(2.0, interval=(0.5, 10.0))
    counts = {}
    for steps in (14, 30):
        with counting_host_reads(monkeypatch) as reads:
            ds.sample(model, latents, schedule, steps, solver=solver, condition=condition, guidance=guidance,
                      generator=torch.Generator().manual_seed(1))
        counts[steps] = [site for site in reads.where() if not _adaptive_error_read(solver, site)]
    assert len(counts[30]) == len(counts[14]), "\n".join(sorted(set(counts[30]) - set(counts[14])) or counts[30])


#: The one read per step allowed in a hot path, with its reason: an adaptive solver's step-size loop must
#: decide on the host whether to accept a step, how long the next one is and when to stop, and all three
#: follow from the step's error estimate (solvers/adaptive.py, DPMAdaptive.solve). One read per attempted step.
ALLOWED_PER_STEP = {"dpm_adaptive": "core/diffusion_schemes/solvers/adaptive.py"}


def _adaptive_error_read(solver, site):
    return solver in ALLOWED_PER_STEP and ALLOWED_PER_STEP[solver] in site


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_dpm_adaptive_reads_once_per_attempted_step_and_nothing_else_per_step(monkeypatch, tol):
    from diffusion_schemes.solvers.adaptive import DPMAdaptive

    attempts = []
    pair = DPMAdaptive._pair
    precond = ds.create("preconditioner", "edm", model=MLP())
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((4, 2), generator=torch.Generator().manual_seed(0))
    solver = {"name": "dpm_adaptive", "rtol": tol, "atol": tol}
    ds.sample(precond, latents, schedule, 3, solver=solver)  # warm-up
    with counting_host_reads(monkeypatch) as reads:
        monkeypatch.setattr(DPMAdaptive, "_pair", lambda self, *args: attempts.append(1) or pair(self, *args))
        ds.sample(precond, latents, schedule, 10, solver=solver)
    per_step = [site for _, site in reads.calls if ALLOWED_PER_STEP["dpm_adaptive"] in site]
    assert len(attempts) > 5 and len(per_step) == len(attempts) + 1  # one per attempt, and the grid's two ends once
    assert len(set(per_step[1:])) == 1  # all at one line: the error estimate
    others = len(reads.calls) - len(per_step)
    assert others <= 4, reads.where()  # the latents' check, the samples' check: a constant per call
