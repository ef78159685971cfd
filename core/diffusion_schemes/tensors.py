"""Tensor helpers every scheme shares: a per-sample value broadcast against a batch of latents
(``append_dims``), the dtype coefficients are computed in (``compute_dtype``: float32 or wider), and
the domain checks behind the library's error messages: ``check_inside`` and ``check_not_nan`` (run
in hot paths, reading no device value on the host), ``outside`` (the values reported) and ``interval``.

>>> import torch
>>> from diffusion_schemes.tensors import append_dims
>>> append_dims(torch.tensor([1.0, 2.0]), 4).shape
torch.Size([2, 1, 1, 1])
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffusion_schemes.errors import ArgumentTypeError, DiffusionSchemesError, InvalidArgumentError

__all__ = [
    "GeneratorArg", "append_dims", "cast", "check_generator", "check_inside", "check_not_nan", "check_positive", "compute_dtype", "interval",
    "normal_noise", "outside",
]


# torch's functions the checks call, bound here: under torch.compile each name read from the ``torch`` module is a
# guard evaluated before every call of the compiled graph, and a module other than the caller's reading ``torch``
# adds a check (in Python) that both read the same module
_assert_async = torch._assert_async
_is_compiling = torch.compiler.is_compiling


def append_dims(x: torch.Tensor, target_ndim: int) -> torch.Tensor:
    """``x`` with trailing singleton dims up to ``target_ndim`` dims: ``(B,)`` becomes ``(B, 1, ..., 1)``.

    A scalar (0-dim tensor) is returned as it is: it broadcasts already.

    >>> import torch
    >>> from diffusion_schemes.tensors import append_dims
    >>> append_dims(torch.ones(3), 2).shape, append_dims(torch.tensor(2.0), 4).shape
    (torch.Size([3, 1]), torch.Size([]))
    >>> append_dims(torch.ones(3, 2), 1)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: cannot append dims to a tensor of 2 dims to reach 1 dims; target_ndim must be >= 2
    """
    if x.ndim == 0:
        return x
    missing = target_ndim - x.ndim
    if missing < 0:
        raise InvalidArgumentError(
            f"cannot append dims to a tensor of {x.ndim} dims to reach {target_ndim} dims; "
            f"target_ndim must be >= {x.ndim}"
        )
    return x.reshape(*x.shape, *([1] * missing))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype coefficients are computed in for a latent of ``dtype``: float32 or wider.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64), compute_dtype(torch.int64)
    (torch.float32, torch.float64, torch.float32)
    """
    if dtype.is_floating_point and dtype.itemsize >= 4:  # float32, float64: the usual case, without a call into torch
        return dtype  # (the dtype's own attributes: under torch.compile constants, where torch.float32 is a guard)
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def cast(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` in ``dtype``; the tensor itself when it is already (``Tensor.to`` is a no-op then, but its
    call costs as much as a small kernel in a hot path).

    >>> import torch
    >>> x = torch.ones(2)
    >>> cast(x, torch.float32) is x, cast(x, torch.float64).dtype
    (True, torch.float64)
    """
    return value if value.dtype == dtype else value.to(dtype)


def outside(values: Any, lo: float, hi: float) -> list[float] | None:
    """Up to four of ``values`` (a float tensor) outside the open interval ``(lo, hi)``, NaN included;
    ``None`` when all are inside. One reduction in the common case; the bounds are compared as
    Python floats, so a float32 ``1.0`` is inside ``(0, math.nextafter(1.0, inf))``.

    >>> import math, torch
    >>> from diffusion_schemes.tensors import outside
    >>> outside(torch.tensor([0.5, 1.0]), 0.0, math.nextafter(1.0, math.inf))
    >>> outside(torch.tensor([0.5, float("nan"), 3.0]), 0.0, 2.0)
    [nan, 3.0]
    """
    if not values.numel():
        return None
    low, high = (float(v) for v in values.detach().aminmax())
    if low > lo and high < hi:  # NaN fails both comparisons
        return None
    wide = values.double()
    return values[~((wide > lo) & (wide < hi))].flatten()[:4].tolist()


def interval(lo: float, hi: float) -> str:
    """``(lo, hi)`` as text; an upper bound set just above a round number (room for rounding) reads
    as that number, closed: ``(lo, number]``.

    >>> import math
    >>> from diffusion_schemes.tensors import interval
    >>> interval(0.0, math.inf), interval(0.0, 1.0), interval(0.0, 1.0 + 1e-6)
    ('(0, inf)', '(0, 1)', '(0, 1]')
    """
    shown = f"{hi:g}"
    return f"({lo:g}, {shown}]" if float(shown) < hi else f"({lo:g}, {shown})"


def check_inside(values: torch.Tensor, lo: float, hi: float, error: Callable[[list[float]], DiffusionSchemesError]) -> None:
    """Raise ``error(bad)`` when a value of ``values`` lies outside the open interval ``(lo, hi)`` (NaN included),
    without synchronising an accelerator.

    A value is inside exactly when clamping it to the widest closed interval of its dtype within
    ``(lo, hi)`` leaves it unchanged (NaN never equals itself). On an accelerator, and under
    ``torch.compile``, the test is three tensor operations (clamp, compare, reduce) ending in
    ``torch._assert_async``, which stays on the tensor's device: nothing is copied to the host, so
    it neither synchronises an accelerator nor keeps a CUDA graph from being captured, and it
    compiles with ``torch.compile(fullgraph=True)`` (inductor fuses it into the kernel that reads
    ``values``). The assertion fails on the device, in stream order, and surfaces as a device-side
    assertion error at the next synchronisation (the device context is then lost): bad input is
    never used silently, and the same call on the CPU names the values. Under ``torch.compile`` a
    failure raises the assertion's ``RuntimeError`` with a generic message. On the CPU, eager, the
    values already lie in host memory and an assertion would read them at once anyway: there the
    test is a clamp and ``torch.equal`` (two operations instead of five), and a failure reads the
    offending values (``outside``, compared in float64 against the Python bounds) and passes up to
    four of them to ``error``.

    >>> import math, torch
    >>> from diffusion_schemes.errors import DomainError
    >>> from diffusion_schemes.tensors import check_inside
    >>> check_inside(torch.tensor([0.5, 2.0]), 0.0, math.inf, DomainError)
    >>> check_inside(torch.tensor([0.5, float("nan"), -1.0]), 0.0, math.inf,
    ...              lambda bad: DomainError(f"noise levels must be positive, got {bad}"))
    Traceback (most recent call last):
      ...
    diffusion_schemes.DomainError: noise levels must be positive, got [nan, -1.0]
    """
    if lo == 0.0 and hi > 1.7976931348623157e308:  # only +inf is above the greatest finite float
        check_positive(values, error)
        return
    detached = values.detach() if values.requires_grad else values  # no autograd record of the clamp
    dtype = detached.dtype  # its attributes, not torch.float32: constants under torch.compile, where names are guards
    if not (dtype.is_floating_point and dtype.itemsize >= 4):
        detached = detached.float()  # half precision and integers: compared in float32
    a, b = _closed_bounds(lo, hi, detached.dtype.itemsize == 4)
    clamped = detached.clamp(a, b)
    if not detached.is_cpu or _is_compiling():
        _assert_async((clamped == detached).all(), _ASSERT_MESSAGE)
    elif not clamped.equal(detached):  # a CPU tensor: its value is in host memory, reading it syncs nothing
        bad = outside(values, lo, hi)
        if bad is not None:  # None: only float rounding at a bound, which ``outside`` compares in float64
            raise error(bad)


def check_positive(values: torch.Tensor, error: Callable[[list[float]], DiffusionSchemesError]) -> None:
    """:func:`check_inside` for ``(0, inf)``, the interval of every noise level: finite and positive.

    It reads no global of ``torch`` and calls no other helper, since under ``torch.compile`` each name the traced code
    reads is a guard evaluated before every call of the graph. The preconditioners' forward calls it on the CPU when
    not compiled; its path on an accelerator and under compile is written out there, in the forward's own module
    (``preconditioners/affine.py``), where it reads no other module's names: keep the two alike.

    >>> import torch
    >>> from diffusion_schemes.errors import DomainError
    >>> check_positive(torch.tensor([1e-30, 3e38]), DomainError)
    >>> check_positive(torch.tensor([0.0, float("inf")]), lambda bad: DomainError(f"not positive and finite: {bad}"))
    Traceback (most recent call last):
      ...
    diffusion_schemes.DomainError: not positive and finite: [0.0, inf]
    """
    detached = values.detach() if values.requires_grad else values  # no autograd record of the clamp
    dtype = detached.dtype  # its attributes, not torch.float32: constants under torch.compile, where names are guards
    if not (dtype.is_floating_point and dtype.itemsize >= 4):
        detached = detached.float()  # half precision and integers: compared in float32
    # the least and the greatest finite positive float32 or float64, written out (constants of this code)
    if detached.dtype.itemsize == 4:
        clamped = detached.clamp(2.0**-149, (2.0 - 2.0**-23) * 2.0**127)
    else:
        clamped = detached.clamp(2.0**-1074, (2.0 - 2.0**-52) * 2.0**1023)
    if not detached.is_cpu or _is_compiling():
        _assert_async((clamped == detached).all(), _ASSERT_MESSAGE)
    elif not clamped.equal(detached):  # a CPU tensor: its value is in host memory, reading it syncs nothing
        bad = outside(values, 0.0, math.inf)
        if bad is not None:  # None: only float rounding at a bound, which ``outside`` compares in float64
            raise error(bad)


def check_not_nan(values: torch.Tensor, error: Callable[[list[float]], DiffusionSchemesError]) -> None:
    """Raise ``error(bad)`` when ``values`` holds NaN (infinities pass), reading nothing on the host
    in the common case; :func:`check_inside` says how a failure surfaces on each device.

    >>> import torch
    >>> from diffusion_schemes.errors import DomainError
    >>> check_not_nan(torch.tensor([float("inf"), 0.0]), DomainError)
    >>> check_not_nan(torch.tensor([float("nan"), 0.0]), lambda bad: DomainError(f"NaN in {bad}"))
    Traceback (most recent call last):
      ...
    diffusion_schemes.DomainError: NaN in [nan]
    """
    detached = values.detach()
    _assert((detached == detached).all(), lambda: values[values != values].flatten()[:4].tolist() or None, error)


_ASSERT_MESSAGE = "a value is outside its domain; run the same call on the CPU to see which"


def _assert(ok: torch.Tensor, find: Callable[[], Any], error: Callable[[list[float]], Exception]) -> None:
    """``torch._assert_async(ok)``; on the CPU a failure raises ``error(find())`` when ``find`` names a value."""
    if _is_compiling() or ok.device.type != "cpu":
        _assert_async(ok, _ASSERT_MESSAGE)
        return
    try:
        _assert_async(ok)
    except RuntimeError:
        bad = find()
        if bad is not None:  # None: only float rounding at a bound, which ``outside`` compares in float64
            raise error(bad) from None


def _single(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def _next_single(x: float, up: bool) -> float:
    """The float32 neighbour of the float32 value ``x``, above it when ``up``."""
    if x == 0.0:
        return _single(1) if up else -_single(1)
    bits = struct.unpack("<i", struct.pack("<f", x))[0]
    return _single(bits + (1 if (x > 0) == up else -1))


def _closed_bounds(lo: float, hi: float, single: bool) -> tuple[float, float]:
    """:func:`_bounds_inside`, cached for eager calls. Under ``torch.compile`` it is computed while tracing (the
    result is a constant of the graph): a cache looked up there would become a guard on the cache's contents,
    failing, with a recompilation, once an eager call filled it in. (``torch.compiler.assume_constant_result``
    would spare the guards on the helpers, but decorating with it imports ``torch._dynamo``, 2.5 s of start-up.)"""
    if _is_compiling():
        return _bounds_inside(lo, hi, single)
    return _cached_bounds(lo, hi, single)


def _bounds_inside(lo: float, hi: float, single: bool) -> tuple[float, float]:
    """The least and the greatest value of float32 (``single``) or float64 strictly inside ``(lo, hi)``.

    >>> _closed_bounds(0.0, math.inf, False) == (5e-324, 1.7976931348623157e308)
    True
    >>> _closed_bounds(0.0, 1.0, True) == (_single(1), 1.0 - 2.0**-24)
    True
    >>> _bounds_inside(0.0, math.inf, True) == (2.0**-149, (2.0 - 2.0**-23) * 2.0**127)   # as check_inside writes them
    True
    >>> _bounds_inside(0.0, math.inf, False) == (2.0**-1074, (2.0 - 2.0**-52) * 2.0**1023)
    True
    """
    if single:
        big = _single(0x7F7FFFFF)
        a, b = (struct.unpack("<f", struct.pack("<f", min(max(v, -big), big)))[0] if math.isfinite(v) else v
                for v in (lo, hi))
        while not a > lo:
            a = _next_single(a, True)
        while not b < hi:
            b = _next_single(b, False)
    else:
        a, b = math.nextafter(lo, math.inf), math.nextafter(hi, -math.inf)
    return a, b


_cached_bounds = functools.lru_cache(maxsize=None)(_bounds_inside)


# ---------------------------------------------------------------- random draws, one generator per sample
#: ``generator=`` where noise is drawn: None (torch's global generator), one ``torch.Generator``, or one per sample.
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def _on_device(generator: torch.Generator, device: torch.device) -> bool:
    """Whether ``generator`` draws on ``device`` (an index left out, as in ``"cuda"``, means the current one)."""
    own = generator.device
    if own.type != device.type:
        return False
    return own.index is None or device.index is None or own.index == device.index


def check_generator(generator: Any, shape: Sequence[int], device: Any = None) -> GeneratorArg:
    """``generator`` checked for drawing noise of ``shape`` on ``device``; a list or tuple comes back as a tuple.

    One generator (or None) draws the whole tensor. A list or tuple must hold one
    ``torch.Generator`` per sample along the first dimension of ``shape``, each on ``device``
    (None: torch's default device); anything else raises :class:`ArgumentTypeError` saying what to
    pass. The check reads no tensor, so it costs nothing on the device.

    >>> import torch
    >>> check_generator([torch.Generator()] * 2, (3, 4))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: 2 generators were given for a batch of 3 samples; pass one torch.Generator per sample along the first dimension (a list of 3), or a single generator
    """
    device = torch.get_default_device() if device is None else torch.device(device)
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        gens: tuple[torch.Generator, ...] = (generator,)
    elif isinstance(generator, (list, tuple)):
        gens = tuple(generator)
        batch = shape[0] if len(shape) else None
        if batch is None or len(gens) != batch:
            raise ArgumentTypeError(
                f"{len(gens)} generators were given for "
                + (f"a batch of {batch} samples" if batch is not None else "a tensor without a batch dimension")
                + f"; pass one torch.Generator per sample along the first dimension (a list of {batch or 'B'}), "
                "or a single generator"
            )
        for i, g in enumerate(gens):
            if not isinstance(g, torch.Generator):
                raise ArgumentTypeError(
                    f"generator[{i}] is a {type(g).__name__}, but every item of a per-sample generator list must be "
                    "a torch.Generator (e.g. torch.Generator(device).manual_seed(seed_i))"
                )
    else:
        raise ArgumentTypeError(
            f"generator must be None, a torch.Generator or a list of one torch.Generator per sample, got "
            f"{type(generator).__name__}"
        )
    for i, g in enumerate(gens):
        if not _on_device(g, device):
            where = "generator" if isinstance(generator, torch.Generator) else f"generator[{i}]"
            raise ArgumentTypeError(
                f"{where} draws on {g.device} but the noise is drawn on {device}; make it with "
                f"torch.Generator(device={str(device)!r})"
            )
    return generator if isinstance(generator, torch.Generator) else gens


def normal_noise(
    shape: Sequence[int], generator: GeneratorArg = None, *, device: Any = None, dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape``: from ``generator``, or sample ``i`` from ``generator[i]`` alone.

    With one generator per sample (a list or tuple, checked by :func:`check_generator`), row ``i``
    is what ``generator[i]`` draws for one sample's shape ``shape[1:]``, so the same generators give
    the same rows in a batch of any size or order: a batch split in parts, with the matching
    generators, gives the same tensor bit for bit. The rows are drawn one after another (a loop
    over the generators, with no read of the device).

    >>> import torch
    >>> from diffusion_schemes.tensors import normal_noise
    >>> gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    >>> whole = normal_noise((3, 2), gens([7, 8, 9]))
    >>> parts = torch.cat([normal_noise((1, 2), gens([7])), normal_noise((2, 2), gens([8, 9]))])
    >>> bool(torch.equal(whole, parts))
    True
    >>> bool(torch.equal(whole[1], torch.randn(2, generator=torch.Generator().manual_seed(8))))
    True
    """
    shape = tuple(shape)
    gens = check_generator(generator, shape, device)
    if gens is None or isinstance(gens, torch.Generator):
        return torch.randn(shape, generator=gens, device=device, dtype=dtype)
    out = torch.empty(shape, device=device, dtype=dtype)
    for row, g in zip(out, gens):
        row.normal_(generator=g)
    return out
