"""Every public name of ``diffusion_schemes`` that can carry a docstring has its own, with a ``>>>`` example.

"Its own" means the object's ``__doc__`` as defined on it: a class's docstring is read from
its ``__dict__``, so a subclass does not pass on its base's example, and a module docstring
covering the name does not count. The examples themselves run as doctests with the suite.
"""

from __future__ import annotations

import diffusion_schemes as ds

#: Names that cannot carry a docstring of their own, each with the reason and where it is documented.
EXEMPT = {
    "WeightingRef": "a typing.Annotated alias (a #: comment and the _config.py module docstring's example)",
    "hookimpl": "a pluggy marker instance (its use is shown in the _hookspecs.py module docstring)",
    "registry": "the Registry instance (the Registry class carries the example)",
}


def own_doc(obj: object) -> str:
    """The docstring defined on ``obj`` itself (not inherited from a base class)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
    else:
        doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) else ""


def test_exemptions_are_public_names():
    assert set(EXEMPT) <= set(ds.__all__), sorted(set(EXEMPT) - set(ds.__all__))


def test_exempt_names_cannot_carry_their_own_docstring():
    # A name listed as exempt must really be a constant, an alias or an instance, not a class or function.
    for name in EXEMPT:
        obj = getattr(ds, name)
        assert not isinstance(obj, type) and not callable(getattr(obj, "__code__", None)), name


def test_registry_class_has_an_example():
    assert ">>>" in own_doc(type(ds.registry))


def test_every_public_name_has_its_own_example():
    missing = [name for name in ds.__all__ if name not in EXEMPT and ">>>" not in own_doc(getattr(ds, name))]
    assert not missing, f"public names without a >>> example in their own docstring: {missing}"


def test_own_doc_does_not_inherit():
    class Base:
        """>>> 1"""

    class Child(Base):
        pass

    assert own_doc(Base) and not own_doc(Child)
