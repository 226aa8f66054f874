"""Fixtures shared by several test modules; the hooks of :mod:`tests.parallel` (``perf`` tests run alone)."""

from __future__ import annotations

import pytest

from matmul import MatmulShape
from matmul.schedules.metaschedule.tune import SearchSettings, tune_workload

from .parallel import pytest_configure, pytest_runtest_protocol, pytest_unconfigure  # noqa: F401 (hooks)

#: The tiny workload the MetaSchedule tests tune once per session.
TUNED_SHAPE = MatmulShape(16, 32, 24)


@pytest.fixture(scope="session")
def tuned_root(tmp_path_factory):
    """A tuning root holding 6 measured trials of :data:`TUNED_SHAPE` for the host profile.

    Shared read-only: a test that changes a database copies it first.
    """
    root = tmp_path_factory.mktemp("ms_root")
    tune_workload(TUNED_SHAPE, trials=6, root=root, search=SearchSettings(per_iter=6, population=16, seed=1))
    return root
