"""Session set-up shared by tests/ and bench/.

The TVM runtime thread pool reads ``TVM_NUM_THREADS`` once, when it starts;
it is configured here before any test can run a kernel, so every test and
benchmark in the session uses the same, recorded thread count.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Hypothesis profiles, registered once. "ci" is the default: bounded and fast;
# "dev" explores more; pick with HYPOTHESIS_PROFILE=dev.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=12, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=60, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    import pytest

    from matmul.core.hardware import HardwareError, configure_runtime_threads, host_facts

    try:  # a bad TVM_NUM_THREADS or MATMUL_TARGET is a usage error naming the variable, not an INTERNALERROR
        configure_runtime_threads()
        host_facts()
    except (HardwareError, ValueError) as err:
        raise pytest.UsageError(str(err)) from None


def pytest_report_header(config):
    from matmul import host_facts

    f = host_facts()
    return (
        f"matmul host: {f.cpu_model} | mcpu={f.mcpu} cores={f.num_cores} simd_fp32={f.simd_lanes_fp32} "
        f"threads={f.runtime_threads} L1d={f.l1d_bytes} L2={f.l2_bytes} | profile={f.profile}"
    )
