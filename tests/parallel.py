"""Running the suite in parallel: ``pytest tests/ -n auto --dist loadfile`` (the README's test command).

pytest-xdist runs the test modules in worker processes, one per core. A test marked ``perf`` reads timings
against a bound, so it runs alone: it waits for the tests running in the other workers to end, and none starts
until it has ended (a readers-writer lock on a file all workers of one run share: every test holds it shared,
a ``perf`` test exclusively; a gate taken first makes the exclusive wait fair). Each worker also drops the
``PYTEST_XDIST_*`` variables from its environment, so a ``pytest bench/`` a test starts is an ordinary run
(pytest-benchmark turns timing off wherever it sees them). Outside a worker the hooks do nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

_LOCKS: dict[str, object] = {}


def lock_paths(testrunuid: str) -> dict[str, Path]:
    base = Path(tempfile.gettempdir()) / f"matmul-tests-{testrunuid}"
    return {which: Path(f"{base}.{which}.lock") for which in ("gate", "run")}


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # not an xdist worker: nothing runs beside this process's tests
        return
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        del os.environ[name]
    for which, path in lock_paths(workerinput["testrunuid"]).items():  # opened once and kept by every worker
        _LOCKS[which] = open(path, "a+")  # noqa: SIM115


def pytest_unconfigure(config):
    workerinput = getattr(config, "workerinput", None)
    for handle in _LOCKS.values():
        handle.close()
    _LOCKS.clear()
    if workerinput is not None:  # a worker still running keeps its open handles; no new one opens these
        for path in lock_paths(workerinput["testrunuid"]).values():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def turn(exclusive: bool):
    """Hold the run lock, shared or (a ``perf`` test) exclusive, for one test."""
    gate, run = _LOCKS["gate"], _LOCKS["run"]
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(run, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _LOCKS:
        return (yield)
    with turn(item.get_closest_marker("perf") is not None):
        return (yield)
