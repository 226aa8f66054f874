"""L3: MetaSchedule tunes into a database, finds the record again, and the
kernel built from it is correct. Plus the database's failure modes."""

from __future__ import annotations

import pytest

from matmul import MatmulShape, host_facts, verify
from matmul.runner import CompiledKernel, compile_module
from matmul.tuning import RECORD_FILE, WORKLOAD_FILE, DatabaseError, best_schedule, open_database, tune

SHAPE = MatmulShape(16, 32, 24)


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("ms_db")
    tune(SHAPE, work_dir, trials=8, seed=1)
    return work_dir


@pytest.mark.metaschedule
def test_tuning_writes_records_that_are_found_again(tuned_dir):
    db = open_database(tuned_dir)
    assert len(db.get_all_tuning_records()) >= 1
    sch = best_schedule(db, SHAPE)
    assert sch is not None
    # the best record is a real MetaSchedule trace, not the untouched kernel
    insts = {inst.kind.name for inst in sch.trace.insts}
    assert "SamplePerfectTile" in insts


@pytest.mark.metaschedule
def test_kernel_built_from_the_record_is_correct(tuned_dir):
    sch = best_schedule(open_database(tuned_dir), SHAPE)
    facts = host_facts()
    kernel = CompiledKernel("metaschedule", SHAPE, "float32", "NN", facts, compile_module(sch, facts.target()), sch.mod)
    assert verify(kernel).ok
    assert verify(kernel, kind="int").ok


@pytest.mark.metaschedule
def test_other_workload_has_no_record(tuned_dir):
    assert best_schedule(open_database(tuned_dir), MatmulShape(16, 32, 25)) is None


def test_missing_database_names_the_path_and_the_command(tmp_path):
    with pytest.raises(DatabaseError, match=rf"{WORKLOAD_FILE} does not exist.*python -m matmul tune"):
        open_database(tmp_path)


@pytest.mark.parametrize("victim", [WORKLOAD_FILE, RECORD_FILE])
def test_corrupt_database_is_reported_and_left_untouched(tmp_path, victim):
    (tmp_path / WORKLOAD_FILE).write_text('["ok"]\n')
    (tmp_path / RECORD_FILE).write_text('[0, 1]\n')
    garbage = '["truncated", {"rec\n'
    (tmp_path / victim).write_text(garbage)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DatabaseError, match=rf"{tmp_path / victim} is corrupt at line 1"):
        open_database(tmp_path)
    with pytest.raises(DatabaseError, match="corrupt"):
        tune(SHAPE, tmp_path, trials=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("trials", [0, -3, 2.5, True])
def test_tune_refuses_bad_trial_counts(tmp_path, trials):
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        tune(SHAPE, tmp_path, trials=trials)


def test_candidate_build_skips_the_tensor_intrinsic_tables():
    # The default MetaSchedule build imports every tensor-intrinsic table in
    # each new worker (24-35 s here), past the builder timeout.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from matmul import MatmulShape, host_facts\n"
        "from matmul.kernel import matmul_module\n"
        "from matmul.tuning import build_candidate\n"
        "m = build_candidate(matmul_module(MatmulShape(4, 8, 4), 'float32', 'NN'), host_facts().target())\n"
        "assert hasattr(m, 'export_library'), type(m)\n"
        "assert 'tvm.s_tir.tensor_intrin' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
