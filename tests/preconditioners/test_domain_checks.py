"""The noise-level check every preconditioner forward runs: ``check_positive`` (and ``check_inside`` on (0, inf),
which goes through it) passes exactly the finite positive values of the dtype it compares in, eager and compiled."""

import math

import pytest
import torch

from diffusion_schemes.errors import DomainError
from diffusion_schemes.tensors import check_inside, check_positive


def _extremes(dtype):
    """The least positive (subnormal) and the greatest finite value of ``dtype``, from its bit patterns."""
    if dtype == torch.float32:
        least = torch.tensor(1, dtype=torch.int32).view(torch.float32).item()
    else:
        least = math.nextafter(0.0, 1.0)
    return least, torch.finfo(dtype).max


def _raises(check, values):
    with pytest.raises(DomainError) as info:
        check(values, lambda bad: DomainError(f"bad: {bad}"))
    return info.value


@pytest.mark.parametrize("check", [check_positive, lambda v, e: check_inside(v, 0.0, math.inf, e)],
                         ids=["check_positive", "check_inside"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_passes_every_finite_positive_value(check, dtype):
    least, greatest = _extremes(dtype)
    check(torch.tensor([least, 1.0, greatest], dtype=dtype), DomainError)


@pytest.mark.parametrize("check", [check_positive, lambda v, e: check_inside(v, 0.0, math.inf, e)],
                         ids=["check_positive", "check_inside"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [0.0, -0.0, -(2.0**-126), math.inf, -math.inf, math.nan])
def test_refuses_and_names_what_is_not(check, dtype, bad):
    error = _raises(check, torch.tensor([1.0, bad, 2.0], dtype=dtype))
    assert str(bad) in str(error) or (math.isnan(bad) and "nan" in str(error))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_other_dtypes_are_compared_in_float32(dtype):
    check_positive(torch.tensor([1, 3], dtype=dtype), DomainError)
    _raises(check_positive, torch.tensor([1, 0], dtype=dtype))


def test_leaves_no_autograd_record():
    sigma = torch.tensor([0.5, 2.0], requires_grad=True)
    check_positive(sigma, DomainError)
    (sigma * 2).sum().backward()
    torch.testing.assert_close(sigma.grad, torch.full((2,), 2.0))


def test_compiled_check_fails_on_a_bad_value_in_the_graph():
    def step(sigma):
        check_positive(sigma, DomainError)
        return sigma.log()

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(torch.tensor([0.5, 2.0])), torch.tensor([0.5, 2.0]).log())
    with pytest.raises(RuntimeError, match="outside its domain"):
        compiled(torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_a_bounded_interval_is_open_in_every_dtype(dtype):
    check_inside(torch.tensor([0.25, 0.5], dtype=dtype), 0.0, 1.0, DomainError)
    for bad in (0.0, 1.0, 2.0):
        _raises(lambda v, e: check_inside(v, 0.0, 1.0, e), torch.tensor([0.5, bad], dtype=dtype))


def test_a_bounded_interval_takes_its_last_inner_float64():
    check_inside(torch.tensor([math.nextafter(1.0, 0.0)], dtype=torch.float64), 0.0, 1.0, DomainError)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_compiled_forward_passes_every_finite_positive_noise_level_and_refuses_the_rest(dtype):
    """Compiled (and on an accelerator) the forward checks its noise levels with its own copy of check_positive's
    device path: the same extremes pass, and each value that is not finite and positive fails in the graph."""
    import diffusion_schemes as ds

    torch._dynamo.reset()
    precond = ds.create("preconditioner", "edm", model=lambda x, c_noise, condition=None: torch.zeros_like(x))
    forward = torch.compile(precond, backend="eager", fullgraph=True, dynamic=False)
    least, greatest = _extremes(dtype)
    x = torch.ones(3, 2, dtype=dtype)
    forward(x, torch.tensor([least, 1.0, greatest], dtype=dtype))
    for bad in (0.0, -0.0, -(2.0**-126), math.inf, -math.inf, math.nan):
        with pytest.raises(RuntimeError, match="a noise level is not finite and positive"):
            forward(x, torch.tensor([1.0, bad, 2.0], dtype=dtype))
    torch._dynamo.reset()
