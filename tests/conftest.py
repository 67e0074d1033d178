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


# .ci/run sets QMCU_STRICT_SKIPS=1: on the CI machine every test can run, so a skip there
# hides a missing dependency or a broken fixture and fails the run.
def pytest_sessionfinish(session, exitstatus):
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("QMCU_STRICT_SKIPS") == "1" and skipped and exitstatus == 0:
        print(f"\nQMCU_STRICT_SKIPS=1: {skipped} test(s) skipped; failing the run "
              "(see the skip reasons above)")
        session.exitstatus = 1
