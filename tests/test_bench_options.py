"""bench/'s grid options: readable ids, and a usage error naming the choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "qkv-M128-full-NN" in ids
    assert len(ids) == 3 * 2 * 2  # kernels x default M x default variants


def test_grid_options_select_cases():
    proc = _collect("--kernels", "mlp_reduce", "--m-values", "96", "--variants", "vec_j_k16", "--layout", "NN,NT")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mlp_reduce-M96-vec_j_k16-NT" in proc.stdout and proc.stdout.count("::test_matmul[") == 2


def test_saved_runs_group_by_kernel_and_m(tmp_path):
    """A saved run can be grouped by the parametrize names the README gives."""
    storage = f"file://{tmp_path}"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider", "--kernels", "qkv",
         "--m-values", "5", "--variants", "full", f"--benchmark-storage={storage}", "--benchmark-save=t",
         "--benchmark-min-rounds=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cmp = subprocess.run(
        [str(Path(sys.executable).with_name("pytest-benchmark")), "--storage", storage, "compare",
         "--group-by=param:kernel,param:M", "--columns=median"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "benchmark 'kernel=qkv M=5'" in cmp.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--variants", "vec_k"), "variant 'vec_k' is declared illegal; choose from baseline"),
        (("--variants", "fast"), "unknown variant 'fast'; known variants: baseline"),
        (("--layout", "TT"), "unknown layout 'TT'; choose one of: NN, NT"),
        (("--kernels", "attn"), "unknown kernel 'attn'"),
        (("--m-values", "0"), "M must be a positive integer"),
        (("--m-values", "16,x"), "must be 'all' or comma-separated integers"),
    ],
)
def test_bad_grid_options_are_usage_errors(args, message):
    proc = _collect(*args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
