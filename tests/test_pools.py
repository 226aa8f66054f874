"""The thread pools' idle spin: set on ``import matmul`` before NumPy loads, a user's own value kept, and a
NumPy that loaded first named (its OpenBLAS has read the variable already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matmul.cli import main
from matmul.core.pools import READ_BY, SPIN_DEFAULTS, pool_spin

ROOT = Path(__file__).resolve().parents[1]


def _spin_in_child(code: str, **env: str) -> dict:
    """``pool_spin()`` of a fresh interpreter that runs ``code`` first, without the variables unless given."""
    child_env = {k: v for k, v in os.environ.items() if k not in SPIN_DEFAULTS} | env
    run = subprocess.run(
        [sys.executable, "-c", f"{code}; import json, matmul.core.pools as p; print(json.dumps(p.pool_spin()))"],
        cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_importing_matmul_sets_every_default_before_numpy_loads():
    assert _spin_in_child("import matmul") == {**SPIN_DEFAULTS, "late": []}


def test_a_users_own_value_wins():
    assert _spin_in_child("import matmul", OPENBLAS_THREAD_TIMEOUT="28")["OPENBLAS_THREAD_TIMEOUT"] == "28"
    assert _spin_in_child("import matmul", TVM_THREAD_POOL_SPIN_COUNT="0")["TVM_THREAD_POOL_SPIN_COUNT"] == "0"


def test_numpy_loaded_first_is_named_late():
    spin = _spin_in_child("import numpy, matmul")
    assert spin["late"] == ["OPENBLAS_THREAD_TIMEOUT"]
    # a value the user set is theirs, read by NumPy as they meant: not late
    assert _spin_in_child("import numpy, matmul", OPENBLAS_THREAD_TIMEOUT="22")["late"] == []


def test_the_defaults_are_values_the_libraries_accept():
    # OpenBLAS clamps log2 cycles to 4..30; TVM's count is a non-negative integer
    assert 4 <= int(SPIN_DEFAULTS["OPENBLAS_THREAD_TIMEOUT"]) <= 30
    assert int(SPIN_DEFAULTS["TVM_THREAD_POOL_SPIN_COUNT"]) >= 0
    assert set(READ_BY) == set(SPIN_DEFAULTS)


def test_this_session_got_them_and_info_prints_them(capsys):
    spin = pool_spin()
    assert set(spin) == {*SPIN_DEFAULTS, "late"}
    assert spin["late"] == [], "NumPy loaded before matmul in this pytest session (root conftest.py)"
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pool_spin"] == spin


@pytest.mark.parametrize("name", sorted(SPIN_DEFAULTS))
def test_each_variable_is_set_in_this_process(name):
    assert os.environ.get(name) is not None
