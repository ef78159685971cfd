"""BaseAffinePreconditioner: the affine formula, final forward, shapes, dtypes, conditions, errors."""

from __future__ import annotations

import pytest
import torch

import diffusion_schemes as ds


class Probe(torch.nn.Module):
    """Records what the preconditioner hands to the backbone; returns a fixed tensor."""

    def __init__(self, output: torch.Tensor | None = None):
        super().__init__()
        self.output = output
        self.calls: list[tuple] = []

    def forward(self, x, t, condition=None, **kwargs):
        self.calls.append((x, t, condition, kwargs))
        return self.output.to(x.dtype) if self.output is not None else torch.full_like(x, 3.0)


class Affine(ds.BaseAffinePreconditioner):
    """Coefficients that are easy to write by hand: c_in = 1/(1+s), c_noise = 10 s, c_out = 2 s, c_skip = 1/(1+s^2)."""

    def compute_coefficients(self, sigma):
        return 1 / (1 + sigma), 10 * sigma, 2 * sigma, 1 / (1 + sigma**2)


class SquaredTime(Affine):
    def sigma(self, t):
        return t**2


def test_forward_is_the_affine_formula_with_the_documented_shapes():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    s = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    f = torch.randn_like(x)
    probe = Probe(f)
    out = Affine(probe)(x, s, condition=None, extra="kw")
    sb = s[:, None, None, None]
    expected = x / (1 + sb**2) + 2 * sb * f
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    (x_in, c_noise, condition, kwargs) = probe.calls[0]
    torch.testing.assert_close(x_in, x / (1 + sb), rtol=1e-12, atol=0)
    assert c_noise.shape == (3,)
    torch.testing.assert_close(c_noise, 10 * s, rtol=1e-12, atol=0)
    assert condition is None and kwargs == {"extra": "kw"}


def test_sigma_override_maps_time_before_the_coefficients_and_forward_sigma_skips_it():
    x, t = torch.randn(2, 5), torch.tensor([0.5, 2.0])
    precond = SquaredTime(Probe())
    torch.testing.assert_close(precond(x, t), precond.forward_sigma(x, t**2))
    torch.testing.assert_close(precond.model.calls[0][1], 10 * t**2)


def test_scalar_time_broadcasts_to_the_batch_and_other_shapes_are_refused():
    x = torch.randn(4, 3)
    precond = Affine(Probe())
    torch.testing.assert_close(precond(x, 0.7), precond(x, torch.full((4,), 0.7)))
    torch.testing.assert_close(precond(x, torch.tensor(0.7)), precond(x, torch.full((4,), 0.7)))
    for bad in (torch.rand(4, 1), torch.rand(3), torch.rand(2, 2)):
        with pytest.raises(ValueError, match=r"t must have shape \(4,\) .* or be a scalar; got shape"):
            precond(x, bad)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_noise_level_zero_or_negative_is_a_clear_error(sigma):
    with pytest.raises(ds.DomainError, match="needs noise levels > 0"):
        Affine(Probe()).forward_sigma(torch.randn(2, 3), torch.tensor([1.0, sigma]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_latent_dtypes_keep_their_dtype_and_coefficients_are_computed_wide(dtype):
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    probe = Probe()
    out = Affine(probe)(x, torch.tensor([0.3, 60.0]))
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    x_in, c_noise, _, _ = probe.calls[0]
    assert x_in.dtype == dtype
    assert c_noise.dtype == torch.promote_types(dtype, torch.float32)
    # the specified arithmetic: coefficients from float64 closed forms, cast once to the latent's
    # dtype, then c_skip * x + c_out * F in that dtype (the float32 times the call received, widened)
    s = torch.tensor([0.3, 60.0]).double()[:, None]
    c_skip, c_out = (1 / (1 + s**2)).to(dtype), (2 * s).to(dtype)
    expected = c_skip * x + c_out * torch.full_like(x, 3.0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # and within the dtype's resolution of the exact float64 value
    torch.testing.assert_close(out, (x.double() / (1 + s**2) + 2 * s * 3.0).to(dtype), atol=0, rtol=4 * torch.finfo(dtype).eps)


def test_c_noise_keeps_float32_precision_for_half_latents():
    labels = torch.tensor([257.0, 258.0, 999.0])  # distinct in float32, collide in bfloat16

    class Labels(ds.BaseAffinePreconditioner):
        def compute_coefficients(self, sigma):
            one = torch.ones_like(sigma)
            return one, sigma, one, one

    probe = Probe()
    Labels(probe)(torch.randn(3, 2, dtype=torch.bfloat16), labels)
    assert probe.calls[0][1].dtype == torch.float32
    assert probe.calls[0][1].unique().numel() == 3


def test_forward_is_final():
    with pytest.raises(TypeError, match="Broken defines forward\\(\\), but BaseAffinePreconditioner.forward is final"):
        class Broken(Affine):  # noqa: F841
            def forward(self, x, t):
                return x
    with pytest.raises(TypeError, match="forward_sigma\\(\\).*is final"):
        class AlsoBroken(Affine):  # noqa: F841
            def forward_sigma(self, x, sigma):
                return x


def test_the_shared_body_of_the_entry_points_is_final_too():
    """forward, forward_sigma and precondition share ``_precondition``: a subclass overriding it would change all three
    behind their final names."""
    with pytest.raises(TypeError, match="_precondition\\(\\).*is final"):
        class Broken(Affine):  # noqa: F841
            def _precondition(self, x, sigma, condition, model_kwargs):
                return x


class Returns(torch.nn.Module):
    """A backbone returning what it is given to return, whatever it is called with."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x, t, condition=None):
        return self.make(x)


@pytest.mark.parametrize("make, error, message", [
    (lambda x: (x,), ds.errors.ModelSignatureError, r"returned a tuple, not a tensor; wrap the network in"),
    (lambda x: [x], ds.errors.ModelSignatureError, r"returned a list, not a tensor"),
    (lambda x: 3.0, ds.errors.ModelSignatureError, r"must return a tensor shaped like its input, got float"),
    (lambda x: x.to(torch.int64), ds.errors.ModelOutputError, r"returned a torch.int64 tensor"),
    (lambda x: x.to("meta"), ds.errors.ModelOutputError, r"returned a torch.float32 tensor on meta"),
    (lambda x: x[:, :1], ds.errors.ModelOutputError, r"returned shape \(3, 1\) but the latent has shape \(3, 2\)"),
], ids=["tuple", "list", "number", "integers", "another device", "shape"])
def test_a_backbone_output_that_does_not_fit_is_named_by_every_entry_point(make, error, message):
    precond, x, sigma = Affine(Returns(make)), torch.randn(3, 2), torch.tensor([0.5, 1.0, 2.0])
    for call in (lambda: precond(x, sigma), lambda: precond.forward_sigma(x, sigma),
                 lambda: precond.precondition(x, sigma)):
        with pytest.raises(error, match=rf"the backbone {message}"):
            call()


def test_a_backbone_that_cannot_take_the_call_is_told_how_to_adapt_and_its_own_type_error_propagates():
    def two_arguments(x, t):
        return x

    def broken(x, t, condition=None):
        raise TypeError("inside the network")

    x, sigma = torch.randn(3, 2), torch.tensor([0.5, 1.0, 2.0])
    with pytest.raises(ds.errors.ModelSignatureError, match=r"backbone cannot be called as model\(x, t, condition"):
        Affine(two_arguments)(x, sigma, condition=torch.zeros(3))
    with pytest.raises(TypeError, match="^inside the network$"):
        Affine(broken)(x, sigma)


def test_compute_coefficients_is_required():
    class Incomplete(ds.BaseAffinePreconditioner):
        pass

    with pytest.raises(TypeError, match="compute_coefficients"):
        Incomplete(Probe())


def test_condition_passes_untouched_and_batch_size_is_checked():
    cond = torch.randn(2, 5)
    probe = Probe()
    Affine(probe)(torch.randn(2, 3), torch.tensor([1.0, 2.0]), cond)
    assert probe.calls[0][2] is cond
    with pytest.raises(ds.ConditionError, match="condition's batch size is 3 but the latent's is 2"):
        Affine(Probe())(torch.randn(2, 3), torch.tensor([1.0, 2.0]), torch.randn(3, 5))
    with pytest.raises(ds.ConditionError, match="Wrap a dict in TensorDict"):
        Affine(Probe())(torch.randn(2, 3), torch.tensor([1.0, 2.0]), {"y": torch.randn(2, 1)})


def test_tensordict_condition_batch_is_checked():
    tensordict = pytest.importorskip("tensordict")
    cond = tensordict.TensorDict({"y": torch.randn(3, 1)}, batch_size=[3])
    with pytest.raises(ds.ConditionError, match="batch size is 3"):
        Affine(Probe())(torch.randn(2, 3), 1.0, cond)


def test_protocols_are_satisfied_structurally():
    precond = Affine(Probe())
    assert isinstance(precond, ds.Preconditioner) and isinstance(precond, ds.DiffusionModel)
    assert isinstance(Probe(), ds.DiffusionModel) and not isinstance(Probe(), ds.Preconditioner)


def test_an_object_without_spec_class_says_how_to_get_one():
    with pytest.raises(NotImplementedError, match="set spec_class"):
        Affine(Probe()).spec


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_the_device_side_check_names_the_bad_noise_level_on_every_entry_point(sigma):
    """forward and forward_sigma check on the tensor's device; on the CPU the error names the value."""
    precond = Affine(Probe())
    x = torch.randn(3, 2)
    bad = torch.tensor([1.0, sigma, 2.0])
    for call in (lambda: precond(x, bad), lambda: precond.forward_sigma(x, bad), lambda: precond(x, sigma)):
        with pytest.raises(ds.DomainError, match=rf"needs noise levels > 0, got \[{sigma}"):
            call()


@pytest.mark.parametrize("t", [1.5, 0.0, float("nan")])
def test_a_time_outside_the_schemes_limits_is_named(t):
    vp = ds.create("preconditioner", "vp", model=Probe())
    with pytest.raises(ds.DomainError, match=rf"VPPreconditioner: diffusion time t=\[{t}\] is outside \(0, 1\]"):
        vp(torch.randn(2, 3), torch.tensor([0.5, t]))


def _asserts_in_compiled_forward(precond, x, t) -> int:
    """How many device-side assertions dynamo records in the graph of ``precond(x, t)``."""
    counted = []

    def backend(gm, example_inputs):
        counted.append(sum(node.target is torch._assert_async for node in gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(precond, backend=backend, fullgraph=True, dynamic=False)(x, t)
    torch._dynamo.reset()
    return counted[0]



class UnitInterval(Affine):
    t_limits = (0.0, 1.0)


def test_the_limits_of_the_times_are_the_class_s_until_an_instance_sets_its_own():
    """The forward reads the limits from a plain attribute set when they are: the class's at construction, an
    instance's own when assigned later (and the default (0, inf) back, where only the noise level is checked)."""
    x, late = torch.randn(2, 3), torch.tensor([0.5, 1.5])
    precond = UnitInterval(Probe())
    with pytest.raises(ds.DomainError, match=r"UnitInterval: diffusion time t=\[1.5\] is outside \(0, 1\)"):
        precond(x, late)
    precond.t_limits = (0.0, 2.0)
    precond(x, late)
    with pytest.raises(ds.DomainError, match=r"t=\[1.5\] is outside \(0, 1.25\)"):
        precond.t_limits = (0.0, 1.25)
        precond(x, late)
    precond.t_limits = (0.0, float("inf"))
    precond(x, torch.tensor([0.5, 1e30]))
    assert _asserts_in_compiled_forward(precond, x, late) == 1  # the noise level's check alone
    assert _asserts_in_compiled_forward(UnitInterval(Probe()), x, torch.tensor([0.5, 0.25])) == 2

@pytest.mark.parametrize(("scheme", "checks"), [("edm", 1), ("vp", 2)])
def test_a_compiled_forward_checks_its_time_only_where_the_scheme_limits_it(scheme, checks):
    """The noise level is checked once; the time only where the scheme states limits other than (0, inf) (VP does).
    Compiled, a check of the time against the default limits would be a second reduction and assertion per call."""
    precond = ds.create("preconditioner", scheme, model=Probe())
    assert _asserts_in_compiled_forward(precond, torch.randn(2, 3), torch.tensor([0.5, 0.25])) == checks


def test_a_noise_level_that_requires_grad_is_checked_and_named():
    """The check reads a detached copy: a good value passes and keeps its graph, a bad one is named."""
    precond = Affine(Probe())
    sigma = torch.tensor([0.5, 1.0], requires_grad=True)
    precond(torch.randn(2, 3), sigma).sum().backward()
    assert sigma.grad is not None
    with pytest.raises(ds.DomainError, match=r"needs noise levels > 0, got \[-1.0\]"):
        precond(torch.randn(2, 3), torch.tensor([0.5, -1.0], requires_grad=True))


def test_a_compiled_forward_refuses_a_bad_noise_level():
    """Compiled, the check is the device-side assertion (the generic message: the eager call names the value)."""
    torch._dynamo.reset()
    precond = torch.compile(Affine(Probe()), backend="aot_eager", fullgraph=True, dynamic=False)
    x = torch.randn(2, 3)
    precond(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(RuntimeError, match="a noise level is not finite and positive; run the same call on the CPU"):
        precond(x, torch.tensor([0.5, 0.0]))
    torch._dynamo.reset()


def test_validate_false_and_precondition_skip_the_check():
    """The documented switch: no error, and the formula's own value at sigma = 0 (c_out = 2 sigma = 0, c_skip = 1)."""
    x = torch.randn(2, 3)
    sigma = torch.tensor([0.0, 1.0])
    unchecked = Affine(Probe(), validate=False)
    expected = torch.stack([x[0], x[1] / 2 + 2 * 3.0])
    torch.testing.assert_close(unchecked.forward_sigma(x, sigma), expected)
    torch.testing.assert_close(Affine(Probe()).precondition(x, sigma), expected)
    with pytest.raises(ds.DomainError):
        Affine(Probe()).forward_sigma(x, sigma)


def test_validate_must_be_a_bool():
    with pytest.raises(ds.errors.ArgumentTypeError, match="validate must be True or False"):
        Affine(Probe(), validate="yes")


def test_validate_is_a_keyword_of_a_schemes_constructor_and_an_attribute():
    from diffusion_schemes_edm import EDMPreconditioner

    precond = EDMPreconditioner(Probe(), sigma_data=0.25, validate=False)
    assert precond.validate is False and precond.spec.sigma_data == 0.25
    precond.forward_sigma(torch.randn(1, 2), torch.tensor([0.0]))  # not checked: no error
    precond.validate = True
    with pytest.raises(ds.DomainError):
        precond.forward_sigma(torch.randn(1, 2), torch.tensor([0.0]))


@pytest.mark.parametrize("scheme", ["edm", "ve", "vp", "iddpm"])
@pytest.mark.parametrize("way", ["create", "spec.build", "constructor", "attribute"])
def test_the_validate_switch_is_reachable_every_way_a_preconditioner_is_built(scheme, way):
    """``validate=False`` through ``ds.create``, the spec's ``build``, the class itself, or set afterwards:
    each gives an unchecked forward (noise level 0 passes), and the default still checks."""
    spec = ds.parse_spec("preconditioner", scheme)
    build = {
        "create": lambda **kw: ds.create("preconditioner", scheme, model=Probe(), **kw),
        "spec.build": lambda **kw: spec.build(model=Probe(), **kw),
        "constructor": lambda **kw: type(spec.build(model=Probe()))(Probe(), **kw),
        "attribute": lambda **kw: _set_validate(spec.build(model=Probe()), **kw),
    }[way]
    checked, unchecked = build(), build(validate=False)
    assert checked.validate is True and unchecked.validate is False
    assert unchecked.spec == checked.spec == spec  # a switch, not a field of the config
    x, sigma = torch.randn(2, 3), torch.tensor([0.0, 1.0])
    unchecked.forward_sigma(x, sigma)  # not checked: no error
    with pytest.raises(ds.DomainError, match="a preconditioner needs noise levels > 0, got \\[0.0\\]"):
        checked.forward_sigma(x, sigma)
    with pytest.raises(ds.errors.ArgumentTypeError, match="validate must be True or False, got 'no'"):
        build(validate="no")


def _set_validate(precond, validate=True):
    precond.validate = validate
    return precond


def test_spec_build_passes_meta_and_leaves_the_switches_out_of_a_class_that_has_none():
    """``meta`` reaches the preconditioner; a class whose constructor takes neither switch still builds."""
    spec = ds.parse_spec("preconditioner", "edm")
    assert spec.build(model=Probe(), meta={"run": 1}).meta == {"run": 1}

    class Plain(torch.nn.Module):
        def __init__(self, model, sigma_data):
            super().__init__()
            self.model, self.sigma_data = model, sigma_data

    spec_class = type(spec)
    original = spec_class._implementation
    try:
        spec_class._implementation = lambda self: Plain
        assert isinstance(spec.build(model=Probe()), Plain)
    finally:
        spec_class._implementation = original


def test_one_time_for_all_samples_is_checked_as_one_value_compiled_and_named_once_eager():
    """A scalar time is checked before it is expanded to the batch: compiled, the comparison the assertion reads
    is of one element (no reduction over the batch, no buffer for it); eager, the error names the value once."""
    shapes = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:  # what the assertion's reduction (``(clamped == values).all()``) runs over
            if node.op == "call_method" and node.target == "all":
                shapes.append(tuple(node.args[0].meta["example_value"].shape))
        return gm.forward

    precond = ds.create("preconditioner", "edm", model=Probe())
    x = torch.randn(64, 3)
    torch._dynamo.reset()
    compiled = torch.compile(precond, backend=backend, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x, torch.tensor(0.7)), precond(x, torch.full((64,), 0.7)))
    torch._dynamo.reset()
    assert shapes == [()]
    with pytest.raises(ds.DomainError, match=r"needs noise levels > 0, got \[0.0\];"):
        precond(x, torch.tensor(0.0))


def test_limits_a_scheme_derives_from_its_spec_fields_are_read_once_they_are_bound():
    """``t_limits`` as a property of the spec's fields: read at the end of construction, after the fields are set."""
    class Bounded(ds.BaseAffinePreconditioner):
        spec_class = type(ds.create("preconditioner", "edm", model=Probe()).spec)

        @property
        def t_limits(self):
            return (0.0, 4 * self.sigma_data)

        def compute_coefficients(self, sigma):
            one = torch.ones_like(sigma)
            return one, sigma.log(), one, one * 0

    precond = Bounded(Probe(), sigma_data=0.5)
    precond(torch.randn(2, 3), torch.tensor([1.0, 1.5]))
    with pytest.raises(ds.DomainError, match=r"t=\[2.5\] is outside \(0, 2\)"):
        precond(torch.randn(2, 3), torch.tensor([1.0, 2.5]))
