"""Faults and bad input (issue 19): no crash, no hang, no lost record, and a wrong kernel never passes.

Each probe is a test: the bad input, the error class and message, and the files left byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from matmul import MatmulShape, host_facts, verify
from matmul.core.runner import CompiledKernel, compile_module
from matmul.core.verify import VerificationError
from matmul.measure import candidates

from .bench_config import configure_bench

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "tuning_db"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matmul", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# --------------------------------------------------------------------------- a kernel that never zeroes C
M, K, N = 4, 8, 8


@T.prim_func(s_tir=True)
def _accumulating(A: T.Buffer((M, K), "float32"), B: T.Buffer((K, N), "float32"), C: T.Buffer((M, N), "float32")):
    # C += A @ B: the reduction's init is lost, as when decompose_reduction goes wrong
    for i, j, k in T.grid(M, N, K):
        with T.sblock("C"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]


def _lost_init_kernel() -> CompiledKernel:
    facts = host_facts()
    mod = tvm.IRModule({"main": _accumulating})
    return CompiledKernel("lost_init", MatmulShape(M, K, N), "float32", "NN", facts,
                          compile_module(mod, facts.target()), mod)


def test_a_kernel_that_never_zeroes_c_fails_verification():
    with pytest.raises(VerificationError, match="call 1 on an output buffer full of garbage"):
        verify(_lost_init_kernel())


def test_the_bench_gate_refuses_a_kernel_that_never_zeroes_c(monkeypatch):
    monkeypatch.setattr(candidates, "build_cached", lambda *a, **k: _lost_init_kernel())
    with pytest.raises(VerificationError, match="lost_init|full on"):
        candidates.prepare("full", MatmulShape(M, K, N))


def test_a_kernel_that_accumulates_into_a_zeroed_c_fails_on_its_second_call():
    """Even when the buffer happens to start at zero, the second call on the first call's output catches it."""
    kernel = _lost_init_kernel()
    from matmul.core.verify import check_calls, make_inputs

    a, b = make_inputs(kernel.shape, seed=1)
    ta, tb = tvm.runtime.tensor(a, kernel.device), tvm.runtime.tensor(b, kernel.device)
    tc = tvm.runtime.tensor(np.zeros((M, N), "float32"), kernel.device)
    with pytest.raises(VerificationError, match="call 2 again on its own output"):
        check_calls(lambda: kernel(ta, tb, tc), tc.numpy, a, b, what="lost_init")


# --------------------------------------------------------------------------- the whole target
NO_AVX = '{"kind": "llvm", "mcpu": "znver3", "mattr": ["-avx", "-avx2", "-fma"]}'


def test_target_attributes_beyond_mcpu_reach_the_facts_the_profile_and_the_code():
    from matmul.core.hardware import facts_for

    facts = facts_for(NO_AVX)
    assert facts.simd_lanes_fp32 == 4 and "avx" not in facts.isa
    assert "noavx" in facts.profile and facts.profile != facts_for('{"kind": "llvm", "mcpu": "znver3"}').profile
    assert "mattr" in str(facts.target())
    proc = _run("show", "--variant", "full", "-M", "16", "--format", "asm", env={"MATMUL_TARGET": NO_AVX})
    assert proc.returncode == 0, proc.stderr
    assert "%ymm" not in proc.stdout and "%zmm" not in proc.stdout and "mulps" in proc.stdout


def test_code_for_a_cpu_feature_the_host_lacks_is_refused_before_it_runs():
    import dataclasses

    from matmul import build
    from matmul.core.hardware import HardwareError

    facts = dataclasses.replace(host_facts(), missing_features=("avx512f",))
    kernel = build("full", MatmulShape(M, K, N), facts=facts)  # building for another machine is fine
    with pytest.raises(HardwareError, match="enables avx512f, which this host's CPU .* lacks"):
        verify(kernel)


# --------------------------------------------------------------------------- database lines TVM must never see
SHAPE16, SHAPE32 = MatmulShape(16, 768, 768), MatmulShape(32, 768, 768)
ZEN3_DB = SHIPPED / "znver3-2c-simd8-t2"


def _host_db(root: Path, *shapes: MatmulShape) -> Path:
    """The shipped Zen 3 records of ``shapes``, re-labelled for this host's target, as a database under ``root``."""
    from matmul.core.store import workload_key

    facts = host_facts()
    pdir = root / facts.profile
    target = {"kind": "llvm", "mcpu": facts.mcpu, "num-cores": facts.num_cores, "keys": ["cpu"], "tag": ""}
    for shape in shapes:
        key = workload_key(shape)
        shutil.copytree(ZEN3_DB / key, pdir / key)
        rec = pdir / key / "database_tuning_record.json"
        lines = [json.loads(line) for line in rec.read_text().splitlines() if line.strip()]
        for line in lines:
            line[1][2] = target
        rec.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return pdir


BAD_LINES = {
    "record-empty-object": ("database_tuning_record.json", "{}", "is not a MetaSchedule tuning record"),
    "record-index-only": ("database_tuning_record.json", "[0]", "is not a MetaSchedule tuning record"),
    "record-index-out-of-range": ("database_tuning_record.json",
                                  '[7, [[[], []], [0.001], {"kind": "llvm"}, []]]', "names workload 7"),
    "record-instruction-short": ("database_tuning_record.json",
                                 '[0, [[[["GetSBlock"]], []], [0.001], {"kind": "llvm"}, []]]',
                                 "has an instruction that is not [kind, inputs, attributes, outputs]"),
    "record-decision-past-trace": ("database_tuning_record.json",
                                   '[0, [[[["GetSBlock", [], ["C", "main"], ["b0"]]], [[1, 3]]], [0.001], '
                                   '{"kind": "llvm"}, []]]', "has a decision that is not [instruction index below 1"),
    "workload-empty-object": ("database_workload.json", "{}", "is not a MetaSchedule workload"),
    "workload-bad-base64": ("database_workload.json", '["123", "!!not base64!!"]', "not valid base64"),
}


@pytest.mark.metaschedule
@pytest.mark.parametrize("probe", BAD_LINES, ids=list(BAD_LINES))
def test_a_malformed_database_line_is_named_not_handed_to_tvm(probe, tmp_path):
    name, line, message = BAD_LINES[probe]
    pdir = _host_db(tmp_path, SHAPE16)
    path = next(pdir.glob(f"*/{name}"))
    path.write_text(path.read_text() + line + "\n")
    before = _digest(tmp_path)
    proc = _run("verify", "--variant", "metaschedule", "--kernel", "qkv", "-M", "16",
                env={"MATMUL_TUNING_ROOT": str(tmp_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr  # an error, not SIGSEGV (-11) nor a traceback
    assert str(path) in proc.stderr and message in proc.stderr and "Traceback" not in proc.stderr
    assert _digest(tmp_path) == before


def _with_record(tmp_path, edit):
    """The host database of SHAPE16 with one more record line: the first record as ``edit`` changes it."""
    pdir = _host_db(tmp_path, SHAPE16)
    path = next(pdir.glob("*/database_tuning_record.json"))
    line = json.loads(path.read_text().splitlines()[0])
    edit(line[1][0])  # the trace: [instructions, decisions]
    path.write_text(path.read_text() + json.dumps(line) + "\n")
    return path


@pytest.mark.metaschedule
@pytest.mark.parametrize("index", ["len", -1])
def test_a_decision_naming_no_instruction_of_its_trace_never_reaches_tvm(index, tmp_path):
    """TVM 0.27 reads such a decision past an array and aborts (``malloc(): invalid size``, SIGABRT): checked in
    Python first, the line is named and the process lives."""
    def edit(trace):
        trace[1][-1][0] = len(trace[0]) if index == "len" else index
    path = _with_record(tmp_path, edit)
    before = _digest(tmp_path)
    proc = _run("verify", "--variant", "metaschedule", "--kernel", "qkv", "-M", "16",
                env={"MATMUL_TUNING_ROOT": str(tmp_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path} line" in proc.stderr and "has a decision that is not [instruction index below" in proc.stderr
    assert _digest(tmp_path) == before


@pytest.mark.metaschedule
@pytest.mark.parametrize("edit", ["unknown-instruction", "decision-of-wrong-type"])
def test_a_record_tvm_refuses_is_named_with_its_folder(edit, tmp_path):
    """Lines the Python checks pass but TVM refuses as it reads them: a DatabaseError naming the folder and
    TVM's reason, never TVM's own traceback."""
    def change(trace):
        if edit == "unknown-instruction":
            trace[0][0][0] = "NoSuchInstruction"
        else:
            trace[1][0][1] = 7  # a tile's sizes, given as one number
    path = _with_record(tmp_path, change)
    before = _digest(tmp_path)
    proc = _run("verify", "--variant", "metaschedule", "--kernel", "qkv", "-M", "16",
                env={"MATMUL_TUNING_ROOT": str(tmp_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"tuning database {path.parent}: TVM cannot read a record" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _digest(tmp_path) == before


@pytest.mark.metaschedule
def test_utf8_garbage_in_a_record_file_is_named(tmp_path):
    from matmul.schedules.metaschedule.database import DatabaseError, records

    pdir = _host_db(tmp_path, SHAPE16)
    path = next(pdir.glob("*/database_tuning_record.json"))
    path.write_bytes(path.read_bytes() + b"\xff\xfe\x00garbage\n")
    with pytest.raises(DatabaseError, match=f"{path} line 6 is not UTF-8 text"):
        records(SHAPE16, root=tmp_path)


@pytest.mark.metaschedule
@pytest.mark.slow
def test_a_bench_session_survives_a_corrupt_record_for_one_shape(tmp_path):
    pdir = _host_db(tmp_path, SHAPE16, SHAPE32)
    bad = next(pdir.glob("*M16*/database_tuning_record.json"))
    bad.write_text("{}\n" + bad.read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-rs", "-p", "no:cacheprovider", "--benchmark-disable",
         "--kernels", "qkv", "--m-values", "16,32", "--variants", "metaschedule,rule_based"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "MATMUL_TUNING_ROOT": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed, 1 skipped" in proc.stdout and f"{bad} line 1 is not a MetaSchedule tuning record" in proc.stdout


def test_a_ledger_with_a_wrong_type_is_refused_and_never_rewritten(tmp_path):
    pdir = tmp_path / "p"
    pdir.mkdir()
    ledger = pdir / "ledger.json"
    ledger.write_text(json.dumps({"profile": "p", "workloads": {"NN-float32-M1-K1-N1": {
        "M": 1, "K": 1, "N": 1, "layout": "NN", "dtype": "float32", "trials": "many"}}}))
    before = ledger.read_bytes()
    proc = _run("prune", "--dir", str(pdir))
    assert proc.returncode == 2 and "trials='many'" in proc.stderr and str(ledger) in proc.stderr
    assert ledger.read_bytes() == before


@pytest.mark.parametrize("best_s", [0, 0.0, float("inf")])
def test_a_ledger_best_time_that_is_no_positive_time_is_refused_and_never_rewritten(best_s, tmp_path):
    # GFLOP/s divide by it: a best_s of 0 passed the type check and then raised ZeroDivisionError
    from matmul.schedules.metaschedule.database import DatabaseError, read_ledger

    pdir = tmp_path / "p"
    pdir.mkdir()
    ledger = pdir / "ledger.json"
    ledger.write_text(json.dumps({"profile": "p", "workloads": {"NN-float32-M1-K1-N1": {
        "M": 1, "K": 1, "N": 1, "layout": "NN", "dtype": "float32", "trials": 4, "best_s": best_s}}}))
    before = ledger.read_bytes()
    with pytest.raises(DatabaseError, match=re.escape(f"best_s={best_s!r}")) as err:
        read_ledger(pdir)
    assert str(ledger) in str(err.value) and ledger.read_bytes() == before


def test_a_second_tune_of_one_profile_is_refused_while_the_first_holds_it(tmp_path):
    from matmul.schedules.metaschedule.database import DatabaseError
    from matmul.schedules.metaschedule.tune import tune_workload

    facts = host_facts()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from matmul.schedules.metaschedule.lock import profile_lock\n"
         f"with profile_lock(Path({str(tmp_path / facts.profile)!r})):\n print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseError, match=f"another tuning process \\(pid {holder.pid}\\)"):
            tune_workload(MatmulShape(4, 8, 8), trials=2, facts=facts, root=tmp_path)
        assert not (tmp_path / facts.profile / ".staging").exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- files and environment
def test_atomic_writes_keep_the_mode_of_the_file_they_replace(tmp_path):
    from matmul.core.store import atomic_write

    old = tmp_path / "kept.txt"
    old.write_text("a")
    old.chmod(0o644)
    atomic_write(old, "b")
    assert old.read_text() == "b" and (old.stat().st_mode & 0o777) == 0o644
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write(tmp_path / "new.txt", "c")
    assert ((tmp_path / "new.txt").stat().st_mode & 0o777) == 0o666 & ~umask


@pytest.mark.parametrize("env, message", [
    ({"TVM_NUM_THREADS": "0"}, "TVM_NUM_THREADS='0' must be a positive thread count"),
    ({"TVM_NUM_THREADS": "abc"}, "TVM_NUM_THREADS='abc' is not an integer"),
    ({"TVM_NUM_THREADS": "1000"}, "1000 runtime threads requested"),
    ({"MATMUL_TARGET": "not json"}, "is not a JSON object"),
])
def test_a_bad_environment_is_a_usage_error_under_pytest_bench(env, message):
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable", "--co"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]  # usage error, not INTERNALERROR (3)
    assert message in proc.stderr and "INTERNALERROR" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("option", ["--m-values", "--kernels"])
@pytest.mark.parametrize("value", ["", ","])
def test_an_empty_list_is_refused_not_read_as_all(option, value):
    # in process (a usage error ends pytest with exit 4: test_bench_options checks that end to end)
    with pytest.raises(pytest.UsageError, match="leave the option out for the default"):
        configure_bench(option, value)


def test_a_file_that_cannot_be_written_is_an_error_not_a_traceback():
    run = ROOT / "tests" / "fixtures" / "benchmarks"
    target = Path("/proc/matmul-report")  # no one, root included, may create a folder here
    proc = _run("report", str(run), "--threshold", "100", "--out", str(target))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: cannot use" in proc.stderr and "/proc/matmul-report" in proc.stderr


def test_a_shape_too_large_to_verify_is_refused_before_anything_is_built_or_allocated():
    # 2e9 x 768 floats is over 11 TiB for A alone: no host has that free, so the check is not host-dependent
    proc = _run("verify", "-M", "2000000000", "--kernel", "qkv", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "out of memory" in proc.stderr and "GiB" in proc.stderr and "smaller" in proc.stderr


def test_the_memory_check_counts_every_array_verification_holds(monkeypatch):
    from matmul.core import verify as verify_mod

    shape = MatmulShape(2_000_000, 768, 768)  # the probe of issue 19: about 11 GiB asked of the host
    need = verify_mod.memory_needed(shape, "float32")
    floats = 2_000_000 * 768
    assert need >= 2 * 4 * floats + 8 * floats + 3 * 8 * floats  # A and C twice, A in float64, 3 float64 M x N
    monkeypatch.setattr(verify_mod, "available_memory", lambda: need - 1)
    with pytest.raises(MemoryError, match=r"needs about \d+\.\d GiB"):
        verify_mod.make_inputs(shape)
    monkeypatch.setattr(verify_mod, "available_memory", lambda: None)  # unknown: no refusal on a guess
    verify_mod.check_memory(MatmulShape(4, 8, 8))
