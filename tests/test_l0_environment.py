"""L0: the environment the suite stands on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import tvm
from tvm.target import codegen

from matmul import host_facts

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _pins() -> dict[str, str]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", dep.strip())
        assert m, f"dependency {dep!r} in pyproject.toml is not pinned with =="
        pins[m.group(1)] = m.group(2)
    return pins


def test_tvm_and_ffi_are_pinned_to_the_working_pair():
    pins = _pins()
    assert pins["apache-tvm"] == "0.27.0.post1"
    # 0.1.15.x segfaults in tvm.ir.save_json; see shared/tvm-0.27-notes.md
    assert pins["apache-tvm-ffi"] == "0.1.14.post1"


@pytest.mark.parametrize("package", sorted(_pins()))
def test_installed_version_matches_pin(package):
    assert version(package) == _pins()[package]


def test_llvm_is_enabled():
    assert tvm.runtime.enabled("llvm")
    assert codegen.llvm_version_major() >= 15


def test_host_target_has_real_mcpu_and_num_cores():
    facts = host_facts()
    target = facts.target()
    assert target.kind.name == "llvm"
    mcpu = str(target.attrs["mcpu"])
    assert mcpu not in ("", "generic")
    assert codegen.llvm_is_valid_cpu(mcpu, codegen.llvm_get_system_triple())
    assert mcpu == codegen.llvm_get_system_cpu()
    assert int(target.attrs["num-cores"]) == facts.num_cores >= 1


def test_runtime_threads_are_set_consistently():
    # conftest sets TVM_NUM_THREADS (default: physical cores) before any kernel
    # runs; the facts, the variable and the live pool must agree.
    facts = host_facts()
    assert int(os.environ["TVM_NUM_THREADS"]) == facts.runtime_threads == tvm.runtime.num_threads() >= 1


def test_save_json_round_trips_a_matmul_module():
    # Run in a child process: with the wrong FFI version this segfaults, and a
    # crash must show up as a failed test, not a dead test session.
    code = (
        "import tvm\n"
        "from matmul import MatmulShape, matmul_module\n"
        "mod = matmul_module(MatmulShape(8, 16, 4))\n"
        "text = tvm.ir.save_json(mod)\n"
        "tvm.ir.assert_structural_equal(tvm.ir.load_json(text), mod)\n"
        "print('ok', len(text))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"save_json failed (rc={proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("ok")
