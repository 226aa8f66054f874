"""Operand memory: 2 MiB-aligned arrays, huge pages where the host grants them, used by every timed operand
(TVM kernels, the NumPy and PyTorch references, NumPy timed alone)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matmul import MatmulShape, build, make_inputs
from matmul.cli import main
from matmul.core import memory
from matmul.core.memory import HUGE_PAGE, huge_kib, huge_pages, operand_copy, operand_empty, thp_mode
from matmul.measure.candidates import prepare

ROOT = Path(__file__).resolve().parents[1]
GRANTED = huge_pages()["granted"]


@given(shape=st.lists(st.integers(0, 200), min_size=1, max_size=3),
       dtype=st.sampled_from(["float32", "float64", "float16", "int8"]))
def test_arrays_are_aligned_sized_and_writable(shape, dtype):
    x = operand_empty(tuple(shape), dtype)
    assert x.shape == tuple(shape) and x.dtype == np.dtype(dtype) and x.flags.c_contiguous and x.flags.writeable
    assert x.ctypes.data % HUGE_PAGE == 0
    x[...] = 3
    assert np.all(x == 3)


def test_a_copy_equals_its_source_in_any_layout():
    src = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)
    for x in (src, src.T, src[::2]):
        out = operand_copy(x)
        assert out.flags.c_contiguous and np.array_equal(out, x) and out.ctypes.data % HUGE_PAGE == 0


def test_negative_dimensions_are_refused():
    with pytest.raises(ValueError, match="negative"):
        operand_empty((4, -1), np.float32)


def test_the_memory_lives_as_long_as_any_view_of_it():
    x = operand_empty((1024,), np.float32)
    view = x[10:20]
    del x
    gc.collect()
    view[...] = 7.0  # the mapping is still there
    assert np.all(view == 7.0)


@pytest.mark.skipif(not GRANTED, reason="this host grants no transparent huge pages (thp_mode: "
                                        f"{thp_mode()}); operands stay 2 MiB-aligned only")
def test_where_the_host_grants_huge_pages_every_operand_gets_them():
    x = operand_copy(np.ones((768, 768), np.float32))  # 2.25 MiB: below NumPy's own 4 MiB threshold
    assert huge_kib(x) == 2 * HUGE_PAGE // 1024
    small = operand_copy(np.ones((16, 768), np.float32))  # 48 KiB still takes a whole huge page
    assert huge_kib(small) == HUGE_PAGE // 1024


def test_kernels_and_references_read_operand_memory(monkeypatch):
    shape = MatmulShape(16, 64, 48)
    a, b = make_inputs(shape)
    for t in build("rule_based", shape).tensors(a, b):  # A, B and C, handed to TVM without a copy
        assert t.data_ptr() % HUGE_PAGE == 0
    made: list[np.ndarray] = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            made.append(out := fn(*args, **kwargs))
            return out
        return wrapped

    import matmul.measure.candidates as candidates
    import matmul.measure.references as references
    monkeypatch.setattr(candidates, "operand_copy", spy(operand_copy))
    monkeypatch.setattr(references, "operand_empty", spy(operand_empty))
    names = ["numpy"] + (["torch"] if references.get_reference("torch").unavailable() is None else [])
    for name in names:
        made.clear()
        prepare(name, shape)  # verified there, on the arrays it will time
        assert [x.shape for x in made] == [(16, 64), (64, 48), (16, 48)]  # A and B copied in, C made there
        assert all(x.ctypes.data % HUGE_PAGE == 0 for x in made)


def test_the_mode_file_is_parsed_and_an_unreadable_one_is_unknown(tmp_path, monkeypatch):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    monkeypatch.setattr(memory, "THP_MODE_FILE", f)
    assert thp_mode() == "madvise"
    monkeypatch.setattr(memory, "THP_MODE_FILE", tmp_path / "missing")
    assert thp_mode() is None


def test_info_reports_the_operand_memory(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["operand_memory"]
    assert info == huge_pages() and info["granted"] == (info["probe_huge_kib"] == 2 * HUGE_PAGE // 1024)


def test_numpy_alone_reads_the_same_memory_without_importing_the_package():
    run = subprocess.run([sys.executable, str(ROOT / "matmul/measure/_numpy_alone.py")], cwd=ROOT,
                         input=json.dumps({"shapes": [[4, 32, 16]], "layout": "NT", "threads": 1, "calls": 3}),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["medians"][0] > 0
