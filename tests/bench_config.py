"""Run the bench grid's option checks in this process, on the grid's own defaults.

Starting pytest on ``bench/`` costs about 7 s (importing TVM imports PyTorch),
so tests that only ask how an option is read call the bench conftest's
``pytest_configure`` here instead; one end-to-end test per kind of outcome
still starts pytest.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH_CONFTEST = Path(__file__).resolve().parents[1] / "bench" / "conftest.py"


def bench_conftest():
    """The bench grid's conftest, loaded as a module of its own (not registered as a plugin)."""
    spec = importlib.util.spec_from_file_location("matmul_bench_conftest", BENCH_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Options:
    """Records what ``pytest_addoption`` declares: each option's default."""

    def __init__(self):
        self.defaults: dict[str, object] = {}

    def getgroup(self, *_args, **_kwargs):
        return self

    def addoption(self, name, *_names, default=None, action=None, **_kwargs):
        self.defaults[name] = False if action == "store_true" else default


class _Config:
    def __init__(self, values: dict):
        self.values = values
        self.stash: dict = {}

    def getoption(self, name):
        return self.values[name]


def configure_bench(*args: str):
    """Apply ``--option value`` pairs over the grid's defaults and run its checks; returns the config.

    Raises ``pytest.UsageError`` exactly where ``pytest bench/`` with those options would exit 4. Only bad
    options should come here: good ones would also point pytest-benchmark's machine id at the host profile.
    """
    module = bench_conftest()
    options = _Options()
    module.pytest_addoption(options)
    values = dict(options.defaults)
    it = iter(args)
    for name in it:
        if name not in values:
            raise KeyError(f"the bench grid has no option {name}; it has {', '.join(sorted(values))}")
        values[name] = True if values[name] is False else next(it)
    config = _Config(values)
    module.pytest_configure(config)
    return config
