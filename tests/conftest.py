"""Shared pytest fixtures: fixture models are skipped, with the reason printed, when absent."""
from __future__ import annotations

import pytest

from fixture_models import fixture_path


@pytest.fixture
def model_path(request):
    path = fixture_path(request.param)
    if not path.exists():
        pytest.skip(f"{path} not generated (run `python3 testdata/make_fixtures.py`)")
    return path
