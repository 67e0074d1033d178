"""Shared pytest fixtures: fixture models are skipped, with the reason printed, when absent."""
from __future__ import annotations

import pytest
from hypothesis import settings

from fixture_models import fixture_path


@pytest.fixture
def model_path(request):
    path = fixture_path(request.param)
    if not path.exists():
        pytest.skip(f"{path} not generated (run `python3 testdata/make_fixtures.py`)")
    return path


# Property tests draw the same examples on every run, so a CI result can be reproduced.
settings.register_profile("reproducible", derandomize=True, print_blob=True)
settings.load_profile("reproducible")
