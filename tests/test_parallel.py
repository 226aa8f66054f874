"""The suite's parallel run: tests of two modules run at once, a ``perf`` test alone, bench runs untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CONFTEST = "from tests.parallel import pytest_configure, pytest_runtest_protocol, pytest_unconfigure  # noqa\n"
_INI = "[pytest]\nmarkers =\n    perf: runs alone\n"
_TEST = '''
import json, os, time
from pathlib import Path
import pytest

def _span(name):
    start = time.monotonic()
    time.sleep(0.8)
    Path(os.environ["SPANS"], name).write_text(json.dumps([start, time.monotonic(), os.getpid()]))

{tests}
'''


def _module(names: list[str], perf: str | None = None) -> str:
    tests = [f"def test_{n}():\n    _span({n!r})\n" for n in names]
    if perf:
        tests.append(f"@pytest.mark.perf\ndef test_{perf}():\n    _span({perf!r})\n")
    tests.append("def test_env_of_a_child_run():\n"
                 "    assert not [n for n in os.environ if n.startswith('PYTEST_XDIST_')]\n")
    return _TEST.format(tests="\n".join(tests))


def test_two_workers_run_modules_at_once_and_a_perf_test_alone(tmp_path):
    suite, spans = tmp_path / "suite", tmp_path / "spans"
    suite.mkdir(), spans.mkdir()
    (suite / "conftest.py").write_text(_CONFTEST)
    (suite / "pytest.ini").write_text(_INI)
    (suite / "test_one.py").write_text(_module(["a1", "a2", "a3", "a4"]))
    (suite / "test_two.py").write_text(_module(["b1", "b2"], perf="timed"))
    locks_before = set(Path(tempfile.gettempdir()).glob("matmul-tests-*.lock"))
    env = {**os.environ, "SPANS": str(spans), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider",
                           "-q", str(suite)], cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {p.name: json.loads(p.read_text()) for p in spans.iterdir()}
    assert set(got) == {"a1", "a2", "a3", "a4", "b1", "b2", "timed"}
    assert len({pid for _, _, pid in got.values()}) == 2  # two worker processes

    def overlap(x, y):
        return min(got[x][1], got[y][1]) - max(got[x][0], got[y][0]) > 0

    others = [n for n in got if n != "timed"]
    assert any(overlap(a, b) for a in others if a.startswith("a") for b in others if b.startswith("b"))
    assert not [n for n in others if overlap("timed", n)]
    assert set(Path(tempfile.gettempdir()).glob("matmul-tests-*.lock")) <= locks_before  # the run removed its own
