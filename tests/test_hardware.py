"""Hardware facts: detection, target overrides and their errors."""

from __future__ import annotations

import json

import pytest
import tvm

from matmul.core import hardware
from matmul.core.hardware import (
    HardwareError,
    configure_runtime_threads,
    facts_for,
    host_facts,
    resolve_target,
)


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


@pytest.mark.parametrize(
    "mcpu, lanes",
    [("skylake-avx512", 16), ("znver4", 16), ("haswell", 8), ("znver3", 8), ("sandybridge", 8), ("nehalem", 4)],
)
def test_simd_lanes_follow_the_target_features(mcpu, lanes):
    assert hardware.simd_lanes_fp32(_target(mcpu)) == lanes


def test_host_facts_are_complete():
    f = host_facts()
    assert f.simd_lanes_fp32 in (4, 8, 16)
    assert f.num_cores >= 1 and f.logical_cpus >= f.num_cores
    assert f.l1d_bytes is None or f.l1d_bytes >= 16 * 1024
    assert f.l2_bytes is None or f.l2_bytes > (f.l1d_bytes or 0)
    d = f.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["tvm_ffi_version"] == "0.1.14.post1"
    assert f.profile == f"{f.mcpu}-{f.num_cores}c-simd{f.simd_lanes_fp32}-t{f.runtime_threads}"


def test_isa_flags_match_simd_width():
    f = host_facts()
    if f.simd_lanes_fp32 == 16:
        assert "avx512f" in f.isa
    elif f.simd_lanes_fp32 == 8:
        assert "avx" in f.isa and "avx512f" not in f.isa


def test_cache_sizes_from_sysfs(tmp_path):
    for idx, (level, kind, size, ways) in enumerate(
        [("1", "Data", "48K", "12"), ("1", "Instruction", "32K", "8"), ("2", "Unified", "2048K", "16"),
         ("3", "Unified", "36M", None)]
    ):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(level + "\n")
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
        if ways is not None:  # a file sysfs may lack: those ways stay unknown
            (d / "ways_of_associativity").write_text(ways + "\n")
    assert hardware._cache_sizes(tmp_path) == {"L1d": 48 << 10, "L1d ways": 12, "L2": 2 << 20, "L2 ways": 16,
                                               "L3": 36 << 20}
    assert hardware._cache_sizes(tmp_path / "absent") == {}


@pytest.mark.parametrize("text, value", [("32K", 32768), ("1M", 1 << 20), ("512", 512), ("64 KiB", 65536), ("?", None)])
def test_parse_size(text, value):
    assert hardware._parse_size(text) == value


def test_override_through_environment(monkeypatch):
    monkeypatch.setenv(hardware.TARGET_ENV, json.dumps({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 4}))
    f = facts_for()
    assert (f.mcpu, f.num_cores, f.simd_lanes_fp32, f.target_overridden) == ("skylake-avx512", 4, 16, True)
    assert "avx512f" in f.isa


def test_override_completes_missing_fields():
    t = resolve_target({"kind": "llvm", "mcpu": "haswell"})
    assert int(t.attrs["num-cores"]) == host_facts().num_cores
    t = resolve_target({"kind": "llvm"})
    assert str(t.attrs["mcpu"]) == host_facts().mcpu


def test_resolve_target_passes_a_target_through():
    t = resolve_target(_target("haswell"))
    assert str(t.attrs["mcpu"]) == "haswell" and int(t.attrs["num-cores"]) == 2


@pytest.mark.parametrize(
    "target, message",
    [
        ("llvm -mcpu=haswell -num-cores=2", "is not a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ({"kind": "cuda"}, "only CPU targets with kind 'llvm'"),
        ({"kind": "llvm", "mcpu": "pentium-9000"}, "LLVM does not know mcpu='pentium-9000'"),
        ({"kind": "llvm", "num-cores": 0}, "num-cores must be a positive integer"),
        ({"kind": "llvm", "num-cores": "2"}, "num-cores must be a positive integer"),
        (42, "must be a tvm Target, a dict or a JSON string"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(target, message):
    with pytest.raises(ValueError, match=message):
        resolve_target(target)


def test_thread_count_cannot_change_after_the_pool_started():
    running = configure_runtime_threads()
    if running < 2:
        pytest.skip("the pool runs 1 thread; no smaller count to ask for")
    with pytest.raises(HardwareError, match=f"already runs {running} thread"):
        configure_runtime_threads(running - 1)
    assert configure_runtime_threads() == running


def test_more_threads_than_cpus_are_refused_before_the_pool_is_touched():
    running = configure_runtime_threads()
    cpus = host_facts().logical_cpus
    with pytest.raises(HardwareError, match=f"{cpus + 1} runtime threads requested .* choose a count from 1 to {cpus}"):
        configure_runtime_threads(cpus + 1)
    assert configure_runtime_threads() == running


@pytest.mark.parametrize("raw", ["two", "0", "-1"])
def test_bad_thread_variable_is_refused(monkeypatch, raw):
    monkeypatch.setenv(hardware.THREADS_ENV, raw)
    with pytest.raises(HardwareError, match="TVM_NUM_THREADS"):
        configure_runtime_threads()
