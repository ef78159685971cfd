"""Property-based: random times, shapes and dtypes inside each domain give finite values; outside, a clear error."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scheme_reference import SCHEMES

import diffusion_schemes as ds
from diffusion_schemes.weightings import LOSS_TYPES

SCHEDULES = {name: ds.create("noise_schedule", name) for name in SCHEMES}
PRECONDS = {name: ds.create("preconditioner", name, model=lambda x, c, condition=None: x) for name in SCHEMES}
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def times(draw, name):
    """A tensor of random shape and dtype, its values spread geometrically over a domain (ends included)."""
    training = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    n = math.prod(shape)
    u = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    lo, hi = SCHEDULES[name].domain(training)
    t = torch.tensor([lo * (hi / lo) ** v for v in u], dtype=torch.float64).reshape(shape)
    return t.to(dtype), training


def _finite(*tensors):
    return all(bool(torch.isfinite(x).all()) for x in tensors)


@pytest.mark.parametrize("name", SCHEMES)
@SETTINGS
@given(data=st.data())
def test_finite_inside_the_domain(name, data):
    s = SCHEDULES[name]
    t, training = data.draw(times(name))
    lam = s.get_log_snr(t, training)
    assert lam.shape == t.shape and lam.dtype == t.dtype
    alpha, sigma = s.get_alpha_sigma(lam)
    back = s.get_t_from_log_snr(lam, training)
    assert _finite(lam, s.noise_level(t), alpha, sigma, back, s.dlog_snr_dt(t, training))
    assert _finite(s.derivative_log_snr(lam, training), s.get_drift_diffusion(lam, training=training))
    assert bool((back > 0).all()) and bool((s.noise_level(t) > 0).all())
    for prediction in LOSS_TYPES:
        weight = s.loss_weight(t, prediction)
        assert weight.shape == t.shape and _finite(weight)
    x = torch.randn(*t.shape, 3, dtype=t.dtype)
    f, g2 = s.get_drift_diffusion(lam[..., None], x=x, training=training)
    assert f.shape == x.shape and _finite(f, g2)


@pytest.mark.parametrize("name", SCHEMES)
@SETTINGS
@given(data=st.data())
def test_preconditioner_finite_inside_the_domain(name, data):
    t, _ = data.draw(times(name))
    t = t.reshape(-1)
    x = torch.randn(len(t), 2, dtype=t.dtype)
    out = PRECONDS[name](x, t)
    assert out.dtype == x.dtype and _finite(out)
    out = PRECONDS[name].forward_sigma(x, SCHEDULES[name].noise_level(t))
    assert _finite(out)


@pytest.mark.parametrize("name", SCHEMES)
@SETTINGS
@given(
    bad=st.one_of(st.floats(max_value=0.0), st.just(float("nan"))),
    good=st.floats(0.01, 0.9),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_nonpositive_or_nan_time_is_a_domain_error(name, bad, good, dtype):
    s = SCHEDULES[name]
    t = torch.tensor([good, bad], dtype=dtype)
    message = r"diffusion time t=\[.*\] is outside \(0, (inf\)|1\]).*(samples|trains) on \["
    for call in (s.get_log_snr, s.noise_level, s.dlog_snr_dt, s.loss_weight):
        with pytest.raises(ds.DomainError, match=message):
            call(t)
