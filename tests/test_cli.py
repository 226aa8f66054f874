"""``python -m matmul``: each command works and bad input exits 2 with a reason."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest

from matmul.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"mcpu", "num_cores", "simd_lanes_fp32", "runtime_threads", "profile"} <= set(info)


def test_variants_lists_the_illegal_one(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "vec_k" in out and "ILLEGAL" in out and "split(k, 16)" in out


def test_shapes(capsys):
    assert main(["shapes", "--kernels", "qkv", "--m-values", "16", "384"]) == 0
    assert capsys.readouterr().out.split()[0] == "qkv-M16"


def test_verify_ok(capsys):
    assert main(["verify", "--variant", "parallel_vec_j", "--shape", "17", "31", "13", "--layout", "NT"]) == 0
    assert "ok:" in capsys.readouterr().out


def test_show_asm_has_fma(capsys):
    assert main(["show", "--variant", "full", "-M", "16", "--format", "asm"]) == 0
    out = capsys.readouterr().out  # read once: a second read is empty
    assert "vfmadd" in out or "fmla" in out


def test_show_figures_reads_the_hot_loop(capsys):
    from matmul.core.hotloop import hot_loop

    assert main(["show", "--variant", "rule_based", "-M", "16", "--figures"]) == 0
    out = capsys.readouterr().out
    loop = hot_loop(out)
    assert f"# {loop.describe()}" in out and not loop.spills
    assert main(["show", "--variant", "baseline", "-M", "16", "--format", "tir", "--figures"]) == 0
    assert "# no hot loop: no loop holding a packed FMA" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "--variant", "nope"], "unknown variant 'nope'; known variants: baseline"),
        (["verify", "--variant", "vec_k"], "schedule is illegal"),
        (["verify", "--kernel", "attn"], "unknown kernel 'attn'"),
        (["verify", "--model", "gpt9"], "unknown model 'gpt9'"),
    ],
)
def test_bad_input_exits_2_with_reason(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_refuses_non_positive_shapes():
    proc = subprocess.run(
        [sys.executable, "-m", "matmul", "verify", "--shape", "4", "0", "4"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "'0' must be positive" in proc.stderr


def test_variants_lists_vendor_references(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "OpenBLAS" in out and "torch" in out


def test_peak_prints_measured_figure(capsys):
    assert main(["peak"]) == 0
    assert capsys.readouterr().out.startswith("measured")


def test_paired_prints_table_and_writes_csv(capsys, tmp_path):
    out = tmp_path / "pair.csv"
    argv = ["paired", "full", "numpy", "--kernels", "qkv", "--m-values", "4", "--blocks", "2", "--calls", "2",
            "--csv", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| qkv | 4 | 768 | 768 | NN | full | numpy |" in text and "| all | 1 |" in text
    assert out.read_text().startswith("kernel,M,K,N,layout,a,b,a_ms,b_ms,speedup_b_over_a")
    assert (tmp_path / "pair-geomean.csv").exists()


def test_paired_takes_explicit_shapes(capsys):
    argv = ["paired", "rule_based[kparts=1]", "rule_based", "--shape", "1", "64", "16", "--shape", "3", "40", "24",
            "--blocks", "2", "--calls", "2"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| shape | 1 | 64 | 16 | NN | rule_based[kparts=1] | rule_based |" in text
    assert "| shape | 3 | 40 | 24 | NN |" in text and "| all | 2 |" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["paired", "full", "vec_k", "--kernels", "qkv"], "declared illegal"),
        (["paired", "full", "numpy", "--blocks", "3"], "even number"),
        (["agreement", "--alternations", "3"], "even number"),
        (["report", "/no/such/run.json"], "no such run file"),
        (["describe", "--set", "tn=100"], "tn 100 is not a multiple of jpack"),
        (["describe", "--set", "fast=1"], "knob=value with knob one of"),
        (["describe", "--set", "rule_based[tk=64]"], "--set takes knob=value,... without the variant name (e.g. --set "
                                                      "tk=64,jpack=16); knobs: "),
        (["describe", "--variant", "full"], "describe shows the rule_based plan only, not --variant full; pin"),
        (["evidence", "tk", "nope"], "unknown study 'nope'; choose from: ksplit"),
        (["paired", "rule_based", "rule_based[tk=0]", "--kernels", "qkv"], "tk must be a positive integer"),
    ],
)
def test_paired_and_report_bad_input(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_describe_prints_each_decision_with_its_rule_and_the_budget(capsys):
    assert main(["describe", "--kernel", "mlp_expand", "-M", "96", "--rules"]) == 0
    out = capsys.readouterr().out
    assert "rule_based plan for M=96 K=768 N=3072" in out
    for knob, rule in [("jpack", "R2"), ("tk", "R4"), ("tn", "R6"), ("tm", "R7"), ("pack_b", "R5"), ("order", "R8")]:
        assert any(line.split()[:1] == [knob] and rule in line.split() for line in out.splitlines()), knob
    assert "packed B micro-panel" in out and "C tile" in out and "R11" in out


def test_describe_with_pinned_knobs(capsys):
    assert main(["describe", "--shape", "1", "768", "768", "--set", "tk=64,order=ifirst"]) == 0
    out = capsys.readouterr().out
    assert "overridden by the caller: tk=64, order=ifirst" in out


def _did_the_work(*_args, **_kwargs):
    raise AssertionError("the command started its work before checking where its output goes")


@pytest.mark.parametrize(
    "argv, work, kind",
    [
        (["e2e", "--model", "t5-small", "--seq", "3", "--json"], "e2e.layer_spec", "file"),
        (["paired", "full", "numpy", "--kernels", "qkv", "--m-values", "4", "--csv"], "measure.paired", "file"),
        (["compare-db", "base", "--csv"], "measure.workload_targets", "file"),
        (["traces", "--csv"], "tune.traces_table", "file"),
        (["ml", "dataset", "--out"], "ml.dataset", "file"),
        (["ml", "evaluate", "--no-measure", "--out"], "ml.dataset", "folder"),
        (["evidence", "order", "--out"], "measure.run_study", "folder"),
        (["report", "--out"], "report.build_report", "folder"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(argv, work, kind, capsys, monkeypatch,
                                                                         tmp_path):
    module, name = work.split(".")
    monkeypatch.setattr(importlib.import_module(f"matmul.cli.{module}"), name, _did_the_work)
    if kind == "file":  # an existing folder, or a file in a folder that does not exist
        cases = [(tmp_path, "is a folder; give the path of a file to write"),
                 (tmp_path / "no" / "out.csv", f"the folder {tmp_path / 'no'} does not exist")]
    else:  # an existing file
        (tmp_path / "taken").write_text("x")
        cases = [(tmp_path / "taken", "is a file; give a folder")]
    for path, message in cases:
        assert main([*argv, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"error: {argv[-1]} {path}" in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["taken"] if kind == "folder" else [])


# --------------------------------------------------------------------------- --target cuda
def test_variants_for_cuda_list_what_each_serves(capsys):
    assert main(["variants", "--target", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "gpu_tiled" in out and "dlight_gpu" in out and "[float32/float16; NN/NT]" in out and "rule_based" not in out


def test_show_cuda_source_with_ptxas_figures(capsys):
    pytest.importorskip("cuda.bindings", reason="PTX needs the cuda extra: pip install -e '.[cuda]'")
    assert main(["show", "--target", "cuda", "--arch", "sm_90", "-M", "64", "--figures"]) == 0
    out = capsys.readouterr().out
    assert 'extern "C" __global__' in out and "cp.async" in out
    from matmul.core.gpu import nominal_spec
    from matmul.core.registry import variant_decisions
    from matmul.core.workloads import kernel_shape

    shared = variant_decisions("gpu_tiled", kernel_shape("qkv", 64, "bert-base"), gpu=nominal_spec("sm_90"))["shared_bytes"]
    assert re.search(rf"// ptxas sm_90 main_kernel: \d+ registers, {shared} bytes shared memory, 0/0 bytes spilled", out)


def test_show_ptx(capsys):
    pytest.importorskip("cuda.bindings", reason="PTX needs the cuda extra: pip install -e '.[cuda]'")
    assert main(["show", "--target", "cuda", "--variant", "dlight_gpu", "--layout", "NT", "--format", "ptx"]) == 0
    assert ".target sm_80" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "--target", "cuda", "--variant", "full"], "variant 'full' is a CPU variant; CUDA variants: "),
        (["show", "--arch", "sm_90"], "--arch sm_90 needs --target cuda"),
        (["show", "--target", "cuda", "--arch", "sm_75"], "unsupported CUDA arch 'sm_75'; choose sm_80 or newer"),
        (["show", "--target", "cuda", "--dtype", "float64"], "unsupported dtype 'float64'; choose one of: float32, float16"),
        (["show", "--dtype", "float16"], "unsupported dtype 'float16'; choose one of: float32, float64"),
        (["show", "--target", "cuda", "--format", "asm"], "unknown source kind 'asm' for a CUDA build; choose one of"),
        (["show", "--target", "cuda", "--variant", "gpu_tiled[bm=48]"], "gpu_tiled bm=48 does not divide 128"),
    ],
)
def test_bad_cuda_input_exits_2_with_reason(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_verify_on_cuda_without_a_gpu_says_so(capsys):
    from matmul.core.gpu import gpu_present

    if gpu_present():
        pytest.skip("this machine has a GPU: verify runs there")
    assert main(["verify", "--target", "cuda", "-M", "16"]) == 2
    assert "has no CUDA GPU" in capsys.readouterr().err
