"""The CUDA target on a machine without a GPU: every GPU variant builds for sm_80 and sm_90 in float32 and float16,
NN and NT; its source has the structure the variant promises; its PTX assembles, and ptxas's shared memory is
what the variant's decisions say. Where a GPU is present, the same builds are checked against NumPy.

PTX and ptxas come from the project's ``cuda`` extra (the README's test command installs it); without it those
tests skip and say how to install it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm.script import ir as I
from tvm.script import tirx as T

from matmul.core import gpu
from matmul.core.gpu import ARCHS, GpuToolError, build_cuda, compile_ptx, gpu_present, nominal_spec, ptxas_figures
from matmul.core.intrinsics import CLASS_FRAME, import_table, shallow_stack
from matmul.core.kernel import GPU_DTYPES, LAYOUTS, matmul_module
from matmul.core.registry import (
    ScheduleContext,
    get_variant,
    schedule,
    unavailable,
    variant_decisions,
    variant_names,
)
from matmul.core.runner import build_gpu
from matmul.core.verify import verify
from matmul.core.workloads import MatmulShape, kernel_shape
from matmul.schedules.cuda import dlight, tiled
from matmul.schedules.metaschedule import gpu as ms_gpu

GPU_VARIANTS = ("dlight_gpu", "gpu_tiled")
#: A BERT-base QKV shape large enough for dlight to use tensor cores (M, N, K > 64).
QKV = kernel_shape("qkv", 128, "bert-base")
HAS_TOOLS = importlib.util.find_spec("cuda") is not None and gpu.toolkit_root() is not None
needs_tools = pytest.mark.skipif(not HAS_TOOLS, reason=f"PTX needs the cuda extra: {gpu.INSTALL_HINT}")
needs_gpu = pytest.mark.skipif(not gpu_present(), reason="no CUDA GPU here (tvm.cuda(0).exist is False)")
CASES = [(v, a, d, lay) for v in GPU_VARIANTS for a in ARCHS for d in GPU_DTYPES for lay in LAYOUTS]


def _build(variant, shape=QKV, dtype="float32", layout="NN", arch="sm_80"):
    return build_gpu(variant, shape, dtype=dtype, layout=layout, arch=arch)


# --------------------------------------------------------------------------- the registry's target axis
def test_cpu_callers_never_see_gpu_variants():
    assert set(GPU_VARIANTS) <= set(variant_names(target="cuda"))
    assert not set(GPU_VARIANTS) & set(variant_names())
    assert set(variant_names(target=None)) == set(variant_names()) | set(variant_names(target="cuda"))
    with pytest.raises(ValueError, match="unknown target 'rocm'; choose one of: llvm, cuda"):
        variant_names(target="rocm")


@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_each_gpu_variant_declares_its_dtypes_and_layouts(variant):
    v = get_variant(variant)
    assert (v.target, v.dtypes, v.layouts) == ("cuda", GPU_DTYPES, LAYOUTS)
    with pytest.raises(ValueError, match="unsupported dtype 'float64'; choose one of: float32, float16"):
        schedule(variant, QKV, dtype="float64", gpu=nominal_spec())


def test_a_cpu_variant_refuses_a_gpu_and_float16():
    with pytest.raises(ValueError, match="is for the CPU .* CUDA variants: .*gpu_tiled"):
        schedule("rule_based", QKV, gpu=nominal_spec())
    with pytest.raises(ValueError, match="unsupported dtype 'float16'; choose one of: float32, float64"):
        schedule("rule_based", QKV, dtype="float16")
    with pytest.raises(ValueError, match="CPU variant; CUDA variants: .*dlight_gpu, gpu_tiled"):
        build_gpu("full", QKV)


@pytest.mark.parametrize("arch", ["sm_70", "sm80", "cuda", ""])
def test_an_unsupported_arch_names_the_choices(arch):
    with pytest.raises(ValueError, match="choose sm_80 or newer, for example: sm_80, sm_90"):
        nominal_spec(arch)


def test_float16_multiplies_in_float32_and_stores_float32():
    script = matmul_module(QKV, "float16")["main"].script()
    assert re.search(r'A: T.Buffer\(\(128, 768\), "float16"\), B: T.Buffer\(\(768, 768\), "float16"\), '
                     r'C: T.Buffer\(\(128, 768\), "float32"\)', script)
    assert 'T.Cast("float32", A[v_i, v_k]) * T.Cast("float32", B[v_k, v_j])' in script


# --------------------------------------------------------------------------- structure of each variant's source
@pytest.mark.parametrize("variant, arch, dtype, layout", CASES)
def test_source_structure(variant, arch, dtype, layout):
    src = _build(variant, dtype=dtype, layout=layout, arch=arch).source("cuda")
    assert re.search(r'extern "C" __global__ void __launch_bounds__\(\d+\) main_kernel', src)
    assert re.search(r"__shared__", src), "no shared-memory tile"
    assert "__syncthreads()" in src
    assert "threadIdx.x" in src and "blockIdx." in src
    elem = {"float32": "float", "float16": "half"}[dtype]
    assert re.search(rf"main_kernel\({elem}\* __restrict__ A_ptr, {elem}\* __restrict__ B_ptr, float\* __restrict__ C_ptr", src)
    if variant == "gpu_tiled":
        assert "cp.async.cg.shared.global" in src and "cp.async.commit_group" in src and "cp.async.wait_group" in src
        assert "wmma" not in src
    if variant == "dlight_gpu":
        assert ("nvcuda::wmma::mma_sync" in src) == (dtype == "float16"), "tensor cores exactly for float16"


def test_dlight_decisions_come_from_its_trace():
    fp16 = variant_decisions("dlight_gpu", QKV, dtype="float16", gpu=nominal_spec())
    assert fp16["tensor_cores"] and "wmma_sync_16x16x16_f16f16f32" in fp16["intrinsics"]
    small = variant_decisions("dlight_gpu", MatmulShape(16, 768, 768), dtype="float16", gpu=nominal_spec())
    assert not small["tensor_cores"], "dlight declines tensor cores when a dimension is 64 or less"
    assert variant_decisions("dlight_gpu", MatmulShape(1, 768, 768), layout="NT", gpu=nominal_spec())["rule"] == (
        "dlight.gpu.GEMV")


# --------------------------------------------------------------------------- PTX, ptxas
@needs_tools
@pytest.mark.parametrize("variant, arch, dtype, layout", [c for c in CASES if c[3] == "NT" or c[2] == "float32"])
def test_ptx_assembles_and_ptxas_agrees_with_the_decisions(variant, arch, dtype, layout):
    kernel = _build(variant, dtype=dtype, layout=layout, arch=arch)
    ptx = kernel.source("ptx")
    assert re.search(rf"^\.target {arch}\b", ptx, re.M) and ".visible .entry main_kernel" in ptx
    fig = kernel.figures()["main_kernel"]
    assert 0 < fig["registers"] <= 255 and fig["spill_stores"] == 0 == fig["spill_loads"]
    if variant == "gpu_tiled":
        assert "cp.async.cg.shared.global" in ptx
        d = variant_decisions(variant, QKV, dtype=dtype, layout=layout, gpu=kernel.spec)
        assert fig["shared_bytes"] == d["shared_bytes"] == d["stages"] * (d["bm"] + d["bn"]) * d["bk"] * np.dtype(dtype).itemsize
    elif dtype == "float16":
        assert re.search(r"\bwmma\.mma\.sync\.aligned\.row\.col\.m16n16k16\.f32\.f32\b", ptx)


@needs_tools
def test_ptxas_rejects_bad_ptx_with_its_message():
    with pytest.raises(GpuToolError, match="ptxas rejected the PTX for sm_80"):
        ptxas_figures(".version 8.0\n.target sm_80\n.address_size 64\nthis is not ptx\n", "sm_80")
    with pytest.raises(GpuToolError, match="NVRTC could not compile the kernel for sm_90"):
        compile_ptx('extern "C" __global__ void k() { undeclared(); }', "sm_90")


def test_missing_tools_name_the_extra(monkeypatch):
    monkeypatch.setattr(gpu, "toolkit_root", lambda: None)
    with pytest.raises(GpuToolError, match=re.escape("pip install -e '.[cuda]'")):
        ptxas_figures(".version 8.0\n", "sm_80")
    with pytest.raises(GpuToolError, match=re.escape("pip install -e '.[cuda]'")):
        compile_ptx("", "sm_80")


# --------------------------------------------------------------------------- gpu_tiled's rules, on several GPUs
SPECS = {"a100": nominal_spec("sm_80"), "h100": nominal_spec("sm_90"),
         "small": dataclasses.replace(nominal_spec("sm_80"), sm_count=16)}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_tiled_decisions_fit_every_bert_shape(spec, dtype):
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for m in (16, 32, 64, 128, 256, 384):
            s = kernel_shape(kernel, m, "bert-base")
            cfg = tiled.decide(s, dtype, "NN", spec)
            assert s.M % cfg.bm == 0 and s.N % cfg.bn == 0 and s.K % cfg.bk == 0
            assert cfg.ty * cfg.tx <= spec.max_threads_per_block and cfg.ty * cfg.tm == cfg.bm
            assert cfg.shared_bytes <= gpu.STATIC_SHARED_BYTES and cfg.stages >= 2
            assert cfg.vec_a * np.dtype(dtype).itemsize == 16 and cfg.async_copy, "BERT rows take 16-byte cp.async"


def test_block_tile_trades_reuse_for_a_full_gpu():
    expand_128, expand_384 = kernel_shape("mlp_expand", 128, "bert-base"), kernel_shape("mlp_expand", 384, "bert-base")
    a100 = SPECS["a100"]
    assert (tiled.decide(expand_128, "float32", "NN", a100).bm, tiled.decide(expand_128, "float32", "NN", a100).bn) == (64, 64)
    big = tiled.decide(expand_384, "float32", "NN", a100)
    assert (big.bm, big.bn) == (128, 128)
    few = tiled.decide(expand_128, "float32", "NN", SPECS["small"])
    assert few.bm * few.bn > 64 * 64, "a GPU with fewer SMs is full with fewer, larger tiles"


@pytest.mark.parametrize("pins, message", [
    ({"bm": 48}, "bm=48 does not divide 128 .*; choices: 128, 64, 32, 16, 8, 4, 2, 1$"),
    ({"stages": 1}, "a pipeline needs at least 2 stages"),
    ({"bk": 256}, "bytes of shared memory .* over the 49152-byte block limit"),
    ({"tm": 3}, r"tm=3 does not divide its tile \(\d+\); choices: \d+, "),
    ({"bm": 128, "bn": 128, "tm": 1, "tn": 1}, "16384 threads per block, over the 1024 limit"),
])
def test_a_pinned_tile_that_cannot_work_is_refused_with_the_reason(pins, message):
    with pytest.raises(ValueError, match=message):
        tiled.decide(QKV, "float32", "NN", SPECS["a100"], pins)


@pytest.mark.parametrize("name, message", [
    ("gpu_tiled[bq=4]", "unknown gpu_tiled knob 'bq'; knobs: bm, bn, bk, tm, tn, stages"),
    ("gpu_tiled[bm=0]", "gpu_tiled knob bm=0 must be a positive integer"),
    ("gpu_tiled[bm=big]", "gpu_tiled knob bm='big' must be a positive integer"),
])
def test_bad_knob_names_are_refused(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_variant(name)


def test_pinned_knobs_reach_the_kernel():
    d = variant_decisions("gpu_tiled[bm=32,bn=64,stages=2]", QKV, gpu=SPECS["a100"])
    assert (d["bm"], d["bn"], d["stages"]) == (32, 64, 2)
    src = _build("gpu_tiled[bm=32,bn=64,stages=2]").source("cuda")
    assert f"float A_shared[{2 * 32 * d['bk']}]" in src.replace("_ptr", "")


def test_narrow_rows_copy_synchronously():
    cfg = tiled.decide(MatmulShape(7, 64, 33), "float16", "NN", SPECS["a100"])
    assert cfg.vec_b == 1 and not cfg.async_copy
    src = _build("gpu_tiled", MatmulShape(7, 64, 33), dtype="float16").source("cuda")
    assert "cp.async" not in src.split("main_kernel(", 1)[1] and "__syncthreads()" in src


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 300), k=st.integers(1, 300), n=st.integers(1, 300), dtype=st.sampled_from(GPU_DTYPES),
       layout=st.sampled_from(LAYOUTS), variant=st.sampled_from(GPU_VARIANTS))
def test_any_shape_builds(m, k, n, dtype, layout, variant):
    kernel = _build(variant, MatmulShape(m, k, n), dtype=dtype, layout=layout)
    assert "main_kernel" in kernel.source("cuda")
    if variant == "gpu_tiled":
        cfg = tiled.decide(MatmulShape(m, k, n), dtype, layout, kernel.spec)
        assert m % cfg.bm == 0 and n % cfg.bn == 0 and k % cfg.bk == 0


def test_tiled_apply_reads_only_the_context():
    ctx = ScheduleContext(QKV, "float32", "NN", facts=None, gpu=SPECS["h100"])
    assert tiled.decisions(ctx) == tiled.decide(QKV, "float32", "NN", SPECS["h100"]).as_dict()


# --------------------------------------------------------------------------- running, where a GPU is
def test_without_a_gpu_running_says_so():
    if gpu_present():
        pytest.skip("this machine has a GPU; the runs below check the kernels")
    kernel = _build("gpu_tiled")
    with pytest.raises(Exception, match="has no CUDA GPU .* show its source or PTX"):
        verify(kernel)


@needs_gpu
@pytest.mark.parametrize("variant", GPU_VARIANTS)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gpu_kernels_match_numpy(variant, dtype, layout):
    """Tensor-core tiles, CUDA-core tiles, a one-row GEMV and odd sizes: each run twice on a garbage C."""
    for shape in (QKV, MatmulShape(16, 3072, 768), MatmulShape(7, 64, 33), MatmulShape(1, 768, 768)):
        assert verify(build_gpu(variant, shape, dtype=dtype, layout=layout)).ok


# --------------------------------------------------------------------------- MetaSchedule on CUDA
@pytest.mark.parametrize("arch", ARCHS)
def test_metaschedule_cuda_candidates_are_generated_and_build_without_a_gpu(arch):
    spec = nominal_spec(arch)
    cands = ms_gpu.measure_candidates(QKV, spec, count=3)
    assert len(cands) == 3
    for sch in cands:
        src = build_cuda(sch.mod, spec).source
        assert "threadIdx.x" in src and "__shared__" in src and "__syncthreads()" in src
        bound = int(re.search(r"__launch_bounds__\((\d+)\)", src)[1])
        assert bound <= spec.max_threads_per_block


def test_cuda_tuning_without_a_gpu_or_tracker_is_refused_and_writes_nothing(tmp_path, capsys):
    if gpu_present():
        pytest.skip("this machine has a GPU: tuning would measure on it")
    from matmul.cli import main

    assert main(["tune", "--target", "cuda", "--kernels", "qkv", "--m-values", "16", "--root", str(tmp_path)]) == 2
    assert "CUDA tuning measures every candidate on a GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="--rpc-tracker HOST:PORT --rpc-key KEY"):
        ms_gpu.check_can_measure(None)


@pytest.mark.parametrize("argv, message", [
    (["tune", "--dtype", "float16", "--kernels", "qkv"], "unsupported dtype 'float16'; choose one of: float32, float64"),
    (["tune", "--arch", "sm_90", "--kernels", "qkv"], "--arch sm_90 needs --target cuda"),
])
def test_cpu_tuning_refuses_gpu_options(tmp_path, capsys, argv, message):
    from matmul.cli import main

    assert main([*argv, "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_metaschedule_gpu_without_a_record_names_the_gpu_tuning_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))
    spec = nominal_spec("sm_90")
    why = unavailable("metaschedule_gpu", QKV, dtype="float16", layout="NT", gpu=spec)
    assert str(tmp_path / "cuda" / "sm_90-132sm" / "NT-float16-M128-K768-N768") in why
    assert "python -m matmul tune --target cuda --arch sm_90 --shape 128 768 768 --dtype float16 --layout NT" in why
    with pytest.raises(LookupError, match="no metaschedule_gpu record"):
        schedule("metaschedule_gpu", QKV, dtype="float16", layout="NT", gpu=spec)
    assert "metaschedule_gpu" not in variant_names() and "metaschedule_gpu" in variant_names(target="cuda")


def test_gpu_databases_never_count_as_cpu_profiles(tmp_path):
    from matmul.schedules.metaschedule.database import LEDGER_FILE, RECORD_FILE
    from matmul.schedules.metaschedule.transfer import profiles

    shard = ms_gpu.gpu_profile_dir(nominal_spec("sm_80"), tmp_path) / "NN-float32-M128-K768-N768"
    shard.mkdir(parents=True)
    (shard / RECORD_FILE).write_text("")
    (shard.parent / LEDGER_FILE).write_text("{}")
    assert shard.parent.relative_to(tmp_path).as_posix() == "cuda/sm_80-108sm"
    assert profiles(tmp_path) == []


# --------------------------------------------------------------------------- the tensor intrinsics' import
def test_the_shallow_stack_gives_inspects_frames_with_the_class_frames_line_only():
    def probe(depth):
        if depth:
            return probe(depth - 1)
        deep = inspect.stack()
        with shallow_stack():
            shallow = inspect.stack()
        return deep, shallow

    deep, shallow = probe(4)
    assert inspect.stack.__module__ == "inspect"  # put back
    assert len(shallow) == len(deep) > CLASS_FRAME
    assert [(f.filename, f.function) for f in shallow] == [(f.filename, f.function) for f in deep]
    assert [(f.frame, f.lineno) for f in shallow[1:]] == [(f.frame, f.lineno) for f in deep[1:]]
    assert [f.code_context for f in shallow] == [
        f.code_context if n == CLASS_FRAME else None for n, f in enumerate(deep)]
    assert shallow[CLASS_FRAME].code_context  # the line is there to read
    with pytest.raises(RuntimeError, match="inside"), shallow_stack():
        raise RuntimeError("inside")
    assert inspect.stack.__module__ == "inspect"  # put back after an error too


def test_tvmscript_still_tells_a_class_body_under_the_shallow_stack():
    """``@I.ir_module`` classes hold their functions by the line frame 2 reads; built with and without the
    shallow stack, the module is the same."""
    def build():
        @I.ir_module
        class Mod:
            @T.prim_func
            def main(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
                for i in range(4):
                    b[i] = a[i] * T.float32(2)
        return Mod

    with shallow_stack():
        shallow = build()
    tvm.ir.assert_structural_equal(shallow, build())


def test_the_table_dlight_uses_is_imported_and_registers_the_wmma_intrinsics():
    import_table(dlight.CUDA_TABLE)
    assert dlight.CUDA_TABLE in sys.modules
    from tvm.s_tir import TensorIntrin

    assert TensorIntrin.get("wmma_sync_16x16x16_f16f16f32") is not None
    assert import_table(dlight.CUDA_TABLE) is sys.modules[dlight.CUDA_TABLE]  # once imported, as it is
