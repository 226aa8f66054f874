"""bench/'s grid options: readable ids, skips that say why, per-profile
storage, and a usage error naming the choices."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matmul.core.hardware import host_facts
from matmul.core.pools import SPIN_DEFAULTS

from .bench_config import configure_bench

ROOT = Path(__file__).resolve().parents[1]


def _collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_default_grid_ids_read_kernel_m_variant_layout():
    proc = _collect()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line.split("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "::test_matmul[" in line]
    assert {"qkv-M128-full-NN", "qkv-M16-numpy-NN", "mlp_expand-M16-baseline-NN", "qkv-M16-rule_based-NN"} <= set(ids)
    assert len(ids) == 3 * 2 * 8  # kernels x default M x default variants


def test_baseline_is_capped_at_small_m_and_says_so():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-rs", "-p", "no:cacheprovider", "--benchmark-disable",
         "--kernels", "qkv", "--m-values", "16,64", "--variants", "baseline"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout
    assert "baseline capped at M<=32" in proc.stdout and "--baseline-max-m" in proc.stdout


def test_metaschedule_without_a_record_is_skipped_with_the_command_that_tunes_it(tmp_path):
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-rs", "-p", "no:cacheprovider", "--benchmark-disable",
         "--kernels", "mlp_reduce", "--m-values", "16", "--variants", "metaschedule", "--layout", "NT"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "MATMUL_TUNING_ROOT": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
    assert "no metaschedule record for mlp_reduce M=16 NT" in proc.stdout
    assert "`python -m matmul tune --kernels mlp_reduce --m-values 16 --layout NT`" in proc.stdout


def test_grid_options_select_cases():
    proc = _collect("--kernels", "mlp_reduce", "--m-values", "96", "--variants", "vec_j_k16", "--layout", "NN,NT")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mlp_reduce-M96-vec_j_k16-NT" in proc.stdout and proc.stdout.count("::test_matmul[") == 2


def test_variant_overrides_survive_the_comma_list():
    proc = _collect("--kernels", "qkv", "--m-values", "16", "--variants", "rule_based[tk=64,jpack=16],numpy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "qkv-M16-rule_based[tk=64,jpack=16]-NN" in proc.stdout and proc.stdout.count("::test_matmul[") == 2


def test_saved_runs_group_by_kernel_and_m(tmp_path):
    """A saved run can be grouped by the parametrize names the README gives."""
    storage = f"file://{tmp_path}"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider", "--group-budget", "2", "--kernels", "qkv",
         "--m-values", "5", "--variants", "full", f"--benchmark-storage={storage}", "--benchmark-save=t",
         "--benchmark-min-rounds=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cmp = subprocess.run(
        [str(Path(sys.executable).with_name("pytest-benchmark")), "--storage", storage, "compare",
         "--group-by=param:kernel,param:M", "--columns=median"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "benchmark 'kernel=qkv M=5'" in cmp.stdout


def test_runs_are_stored_per_cpu_profile(tmp_path):
    """pytest-benchmark's folder names only OS and Python; the suite appends
    the CPU profile, and records the profile and peak in machine_info."""
    from matmul import host_facts

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider", "--group-budget", "2", "--kernels", "qkv",
         "--m-values", "3", "--variants", "full,numpy", f"--benchmark-storage=file://{tmp_path}",
         "--benchmark-save=p", "--rounds=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k not in SPIN_DEFAULTS},  # as in a fresh shell
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (saved,) = tmp_path.glob("*/0001_p.json")
    profile = host_facts().profile
    assert saved.parent.name.endswith(f"-{profile}")
    data = json.loads(saved.read_text())
    facts = data["machine_info"]["matmul"]
    assert facts["profile"] == profile and facts["mcpu"] == host_facts().mcpu
    assert facts["fp32_peak"]["method"] == "measured" and facts["fp32_peak"]["gflops"] > 0
    assert facts["pool_spin"] == {**SPIN_DEFAULTS, "late": []}  # set before the session loaded NumPy
    for case in data["benchmarks"]:
        info = case["extra_info"]
        assert info["gflops"] > 0 and info["pct_peak"] > 0 and info["threads"] == host_facts().runtime_threads
        assert info["agreement_check"] == ("time_evaluator" if case["params"]["variant"] == "full" else "numpy_alone")
    (full,) = [c for c in data["benchmarks"] if c["params"]["variant"] == "full"]
    assert full["extra_info"]["decisions"]["vector_width"] == host_facts().simd_lanes_fp32
    assert full["extra_info"]["speedup_vs_numpy"] > 0


def test_missing_torch_is_a_skip_with_the_install_command():
    # A child interpreter where `import torch` fails, whatever is installed.
    code = (
        "import sys, pytest; sys.modules['torch'] = None; "
        "sys.exit(pytest.main(['bench/', '--e2e-models', 'none', '-q', '-rs', '-p', 'no:cacheprovider', '--benchmark-disable', "
        "'--kernels', 'qkv', '--m-values', '4', '--variants', 'torch']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "pip install -e '.[torch]'" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the torch extra is not installed")
def test_torch_reference_verifies_when_installed():
    proc = _collect("--variants", "torch")
    assert proc.returncode == 0
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "--kernels", "qkv", "--m-values", "5", "--variants", "torch", "--layout", "NN,NT"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("--variants", "vec_k"), "variant 'vec_k' is declared illegal (is not a data parallel block iter); choose"),
        (("--variants", "fast"), "unknown variant 'fast'; choose from: baseline"),
        (("--variants", "fast"), "numpy, torch"),
        (("--baseline-max-m", "0"), "--baseline-max-m: '0' must be positive"),
        (("--rounds", "x"), "--rounds: 'x' is not an integer"),
        (("--layout", "TT"), "unknown layout 'TT'; choose one of: NN, NT"),
        (("--kernels", "attn"), "unknown kernel 'attn'"),
        (("--m-values", "0"), "M must be a positive integer"),
        (("--m-values", "16,x"), "must be 'all' or comma-separated integers"),
        (("--variants", "rule_based[tk=-1]"), "tk must be a positive integer, got -1"),
        (("--variants", "metaschedule[from=nope-2c]"), "no MetaSchedule database for profile 'nope-2c'"),
        (("--aa", "numpy"), "the A/A copy must be a TVM variant"),
        (("--aa", "fast"), "unknown variant 'fast'"),
        (("--variants", "full,numpy", "--aa", "rule_based"), "--aa 'rule_based' is not among --variants (full, numpy)"),
        (("--variants", "full,numpy", "--aa", "rule_based"), "auto (rule_based, else the first TVM case) or none"),
        (("--e2e-models", "none", "--e2e-batch", "x"), "--e2e-batch: 'x' is not an integer"),
        (("--e2e-models", "none", "--e2e-batch", "0"), "--e2e-batch: '0' must be positive"),
        (("--group-budget", "x"), "--group-budget"),
        (("--processes", "0"), "--processes: '0' must be positive"),
        (("--processes", "two"), "--processes: 'two' is not an integer"),
        (("--processes", "2", "--no-interleave"), "it does nothing with --no-interleave or --target cuda"),
        (("--processes", "2", "--target", "cuda"), "it does nothing with --no-interleave or --target cuda"),
        (("--ci-width", "2"), "ci_width"),
        (("--target", "cuda", "--gpu-variants", "rule_based"), "--gpu-variants: 'rule_based' is a CPU variant"),
        (("--target", "cuda", "--gpu-variants", "fast"), "unknown variant 'fast'"),
        (("--target", "cuda", "--gpu-dtypes", "float64"), "unsupported dtype 'float64'; choose one of: float32, float16"),
        (("--target", "cuda", "--arch", "sm_75"), "unsupported CUDA arch 'sm_75'"),
    ],
)
def test_bad_grid_options_are_usage_errors(args, message):
    # In process: the bench conftest's own option checks, on its own defaults. One start of pytest costs
    # 7 s (TVM imports torch), so the exit status is checked end to end once, below, not per option.
    with pytest.raises(pytest.UsageError) as err:
        configure_bench(*args)
    assert message in str(err.value)


def test_a_bad_grid_option_ends_pytest_with_a_usage_error():
    proc = _collect("--rounds", "x")
    assert proc.returncode == 4 and "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "--rounds: 'x' is not an integer" in proc.stderr


def test_ml_guided_fallback_is_saved_in_extra_info(tmp_path):
    """No model for the profile: ml_guided runs the rules' config and the saved case says so and why."""
    import os

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider", "--group-budget", "2", "--kernels", "qkv",
         "--m-values", "8", "--variants", "ml_guided", f"--benchmark-storage=file://{tmp_path / 'runs'}",
         "--benchmark-save=ml", "--rounds=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MATMUL_MODEL_ROOT": str(tmp_path / "no-models")},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (saved,) = (tmp_path / "runs").glob("*/0001_ml.json")
    (case,) = json.loads(saved.read_text())["benchmarks"]
    info = case["extra_info"]
    assert info["fallback"].startswith("no model for profile") and "python -m matmul ml train" in info["fallback"]
    assert info["decisions"]["source"] == "rule_based" and info["decisions"]["search_trials"] == 0
    assert info["gflops"] > 0
    # the roofline: which limit bounds the case, measured at its own working set, and how close it came
    assert info["limit"] in ("compute", "memory") and info["bandwidth_gbs"] > 0 and info["limit_pct"] > 0
    # the compute ceiling is the peak probe timed in the case's own rounds, not the run's once-measured peak (which
    # read 118 GFLOP/s against the rounds' 232 in one CI run, a neighbour having taken a core for that second)
    assert info["bandwidth_bytes"] >= 0.9 * info["bytes_moved"]
    assert info["limit_gflops"] <= info["peak_gflops_in_rounds"]
    # what its hot loop does, read from the kernel's assembly
    loop = info["hot_loop"]
    assert loop["fmas"] > 0 and loop["lanes"] == host_facts().simd_lanes_fp32 and loop["stack_loads"] == 0
    assert loop["loads_per_fma"] == pytest.approx(loop["loads"] / loop["fmas"], abs=1e-3)
    assert len(info["code"]) == 16  # the assembly's digest, for the report's same_code


def test_the_default_run_holds_the_end_to_end_grid_and_bad_e2e_options_are_usage_errors():
    ids = [line for line in _collect().stdout.splitlines() if "::test_e2e[" in line]
    assert [i.split("[", 1)[1].rstrip("]") for i in ids] == ["e2e-bert-base-seq128-rule_based",
                                                            "e2e-bert-base-seq128-torch"]
    proc = _collect("--e2e-models", "t5-small", "--e2e-seqs", "1,7", "--e2e-schedules", "none,full")
    assert "e2e-t5-small-seq7-full" in proc.stdout and proc.stdout.count("::test_e2e[") == 4
    assert "::test_e2e[" not in _collect("--e2e-models", "none").stdout
    for args, phrase in ((("--e2e-schedules", "metaschedule[from=znver3-2c-simd8-t2]"), "replays records"),
                         (("--e2e-models", "bert-huge"), "bert-base"),
                         (("--e2e-seqs", "0"), "--e2e-seqs")):
        proc = _collect(*args)
        assert proc.returncode == 4 and phrase in proc.stdout + proc.stderr, (args, proc.stdout + proc.stderr)


@pytest.mark.perf
def test_an_end_to_end_case_checks_its_layer_before_timing(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/test_e2e_bench.py", "-q", "-p", "no:cacheprovider",
         "--e2e-models", "t5-small", "--e2e-seqs", "16", "--e2e-schedules", "rule_based,none,metaschedule",
         "--group-budget", "2", "--benchmark-json", str(out), "-rs"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MATMUL_TUNING_ROOT": str(tmp_path / "empty"), "COLUMNS": "4000"},  # whole -rs lines
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the layer's tasks are not tuned under that root: skipped, with the command that tunes them
    assert "1 skipped" in proc.stdout
    assert "e2e --model t5-small --seq 16 --batch 1 --schedule metaschedule --tune" in proc.stdout
    cases = {b["params"]["schedule"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    rule = cases["rule_based"]
    assert rule["speedup_vs_none"] > 1 and rule["max_error"] < 1e-3 and rule["aa_variant"] == "rule_based"
    lo, hi = rule["speedup_vs_none_best_ci"]  # best times too, the figure to compare across runs
    assert lo <= rule["speedup_vs_none_best"] <= hi and rule["speedup_vs_none_best"] > 1
    assert 0 < rule["matmul_share"] < 1 and {op["name"] for op in rule["ops"]} == {p["name"] for p in rule["plans"]}
    assert len(rule["samples_s"]) >= 4 and rule["noise_floor"] is not None
    # percent of the peak probe timed in the layer's rounds, and of the run's once-measured peak
    assert rule["pct_peak"] == pytest.approx(100 * rule["gflops"] / rule["peak_gflops_in_rounds"])
    assert rule["pct_peak_run"] == pytest.approx(100 * rule["gflops"] / rule["peak_gflops"])
    assert rule["pct_peak_ci"][0] <= rule["pct_peak"] <= rule["pct_peak_ci"][1]
    assert set(cases) == {"rule_based", "none"}  # the probe is a control, not a case


def test_with_timing_disabled_each_layer_and_pytorchs_is_checked_and_run_once():
    """CI's bench pass: the schedule's layer is built and checked, PyTorch's layer checked against the same
    float64 NumPy layer, and each run once through the fixture (an unused fixture warns; here it is an error)."""
    pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/test_e2e_bench.py", "-q", "-p", "no:cacheprovider",
         "--benchmark-disable", "--e2e-models", "t5-small", "--e2e-seqs", "16", "--e2e-schedules", "rule_based,torch",
         "-W", "error::pytest_benchmark.logger.PytestBenchmarkWarning"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "2 passed" in proc.stdout and "warning" not in proc.stdout, out


def test_the_gpu_grid_is_collected_only_with_target_cuda_and_skips_without_a_gpu():
    from matmul.core.gpu import gpu_present

    proc = _collect("--target", "cuda", "--kernels", "qkv", "--m-values", "128")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line.split("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "::test_gpu_matmul[" in line]
    assert ids[:3] == ["qkv-M128-cublas-float16-NN", "qkv-M128-dlight_gpu-float16-NN", "qkv-M128-gpu_tiled-float16-NN"]
    assert len(ids) == 2 * 3 and "::test_matmul[" not in proc.stdout and "::test_e2e[" not in proc.stdout
    if gpu_present():
        return
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--target", "cuda", "-q", "-rs", "-p",
                           "no:cacheprovider", "--kernels", "qkv", "--m-values", "16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "6 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert "no CUDA GPU on this machine" in proc.stdout and "tests/test_cuda.py" in proc.stdout
