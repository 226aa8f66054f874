"""NumPy inside the suite versus alone: alternated, with ratios per shape."""

from __future__ import annotations

import pytest

from matmul import Workload
from matmul.measure.agreement import NUMPY_TOLERANCE, numpy_agreement


@pytest.mark.perf
def test_numpy_inside_the_suite_is_not_distorted():
    table, summary = numpy_agreement([Workload("qkv", 32)], alternations=2, calls=10)
    row = table.iloc[0]
    assert row.suite_ms > 0 and row.alone_ms > 0
    assert row.agrees == (abs(row.ratio - 1) <= NUMPY_TOLERANCE)
    assert summary.loc[0, "shapes"] == 1
    # Loose on purpose (shared 2-core VM): the thread-pool fight this guards
    # against distorted NumPy by 4x-100x, not by 10%.
    assert 0.5 < summary.loc[0, "ratio_geomean"] < 2.0, table


@pytest.mark.parametrize("alternations", [1, 3])
def test_alternations_must_pair_up(alternations):
    with pytest.raises(ValueError, match="even number"):
        numpy_agreement([Workload("qkv", 4)], alternations=alternations)


def test_no_workloads_is_an_error():
    with pytest.raises(ValueError, match="no workloads"):
        numpy_agreement([])
