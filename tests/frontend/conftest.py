"""Fixtures for the frontend tests: the session's converted model zoo."""

import pytest

from tests.models.zoo import session_zoo


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Seeded torch models converted by coremltools, cached for the session (tests/models/zoo.py)."""
    return session_zoo(tmp_path_factory)
