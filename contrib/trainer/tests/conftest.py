"""The fixtures the trainer's tests share: a registry that forgets what a test registered, and one outside
plugin distribution (a preconditioner ``outside_skip``) installed with pip, to train by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin_packages import GOOD, GOOD_IMPL, fresh_registry, pip_install_target, with_outside, write_distribution  # noqa: F401


@pytest.fixture(scope="session")
def outside_site(tmp_path_factory) -> Path:
    """A folder holding the distribution ``outside-good`` (module ``outside_good``), installed with pip."""
    good = write_distribution(tmp_path_factory.mktemp("trainer-outside-src"), "outside-good", "outside_good", GOOD)
    (good / "outside_good" / "impl.py").write_text(GOOD_IMPL)
    site = tmp_path_factory.mktemp("trainer-outside-site")
    pip_install_target([good], site)
    return site
