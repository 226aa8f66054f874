"""Thread-pool control: the quiet detector sees a spinning thread, and the
limits apply to NumPy's BLAS."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from matmul.measure.timing import (
    blas_info,
    blas_threads,
    call_times,
    median_seconds,
    wait_for_quiet,
)


def test_quiet_process_settles_at_once():
    settle = wait_for_quiet()
    assert settle.quiet and settle.seconds < 2.0  # no pause of its own; a loaded machine may delay the check


@contextlib.contextmanager
def _spinner(seconds: float):
    """A thread burning CPU for ``seconds`` (or until the block ends)."""
    stop, done = time.perf_counter() + seconds, threading.Event()

    def spin():
        while not done.is_set() and time.perf_counter() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


@pytest.mark.perf  # one 5 ms window with the spinner off the CPU (the other xdist worker's load) reads as quiet
def test_spinning_thread_delays_quiet_until_it_stops():
    with _spinner(0.3):
        settle = wait_for_quiet(timeout=2.0)
    assert settle.quiet
    assert settle.seconds >= 0.2  # it waited for the spinner, not a fixed pause


@pytest.mark.perf  # as above
def test_endless_spinner_times_out_and_says_so():
    with _spinner(60):
        settle = wait_for_quiet(timeout=0.1)
    assert not settle.quiet and settle.seconds >= 0.1


@pytest.mark.parametrize("kw", [{"window": 0}, {"timeout": -1}, {"fraction": 1.5}])
def test_quiet_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        wait_for_quiet(**kw)


def test_blas_threads_limits_openblas_and_restores():
    # Every OpenBLAS loaded counts: NumPy's, and SciPy's when another test
    # imported it.
    def openblas_threads():
        return [i["num_threads"] for i in blas_info() if i["internal_api"] == "openblas"]

    before = openblas_threads()
    assert before, "NumPy's OpenBLAS is not visible to threadpoolctl"
    with blas_threads(1):
        assert set(openblas_threads()) == {1}
    assert openblas_threads() == before
    with pytest.raises(ValueError, match="positive"):
        with blas_threads(0):
            pass


def test_call_times_and_median():
    assert len(call_times(lambda: None, 5)) == 5
    calls = []
    clock = iter(range(100))  # a fake perf_counter: each call lasts exactly one tick
    median = median_seconds(lambda: calls.append(1), calls=5, warmup=1, clock=lambda: float(next(clock)))
    assert len(calls) == 6 and median == 1.0
