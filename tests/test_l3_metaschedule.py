"""L3: MetaSchedule tunes into a per-profile database, finds its records again,
and the kernel built from them is correct. Plus the database's failure modes:
a kill during tuning, corrupt files, records from another CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matmul import MatmulShape, host_facts, schedule, verify
from matmul.core.hardware import facts_for
from matmul.core.runner import CompiledKernel, compile_module
from matmul.core.store import default_root, profile_dir, workload_key
from matmul.schedules.metaschedule.database import (
    DAMAGED,
    LEDGER_FILE,
    RECORD_FILE,
    STAGING,
    WORKLOAD_FILE,
    DatabaseError,
    NoRecordError,
    best_schedule,
    has_record,
    open_database,
    prune,
    read_ledger,
    records,
)
from matmul.schedules.metaschedule.lock import LOCK_FILE
from matmul.schedules.metaschedule.tune import SearchSettings, tune, tune_workload

from .conftest import TUNED_SHAPE

ROOT = Path(__file__).resolve().parents[1]
SHAPE = TUNED_SHAPE  # tuned once per session by the shared tuned_root fixture
#: Small searches: the population, not the trial count, sets a tiny workload's tuning time.
FAST = SearchSettings(population=16, seed=1)



@pytest.mark.metaschedule
def test_tuning_writes_records_that_are_found_again(tuned_root):
    pdir = profile_dir(host_facts(), tuned_root)
    entry = read_ledger(pdir)[workload_key(SHAPE)]
    assert entry.trials == 6 and entry.seconds > 0 and entry.best_gflops > 0
    assert len(open_database(pdir / workload_key(SHAPE)).get_all_tuning_records()) == 6
    assert not (pdir / STAGING / workload_key(SHAPE)).exists()  # staging is merged and cleaned up
    sch = best_schedule(SHAPE, root=tuned_root)
    insts = {inst.kind.name for inst in sch.trace.insts}
    assert "SamplePerfectTile" in insts  # a real MetaSchedule trace, not the untouched kernel


@pytest.mark.metaschedule
def test_kernel_built_from_the_record_is_correct(tuned_root):
    facts = host_facts()
    for rec in records(SHAPE, root=tuned_root):  # every successful record, not only the best
        from tvm.s_tir import Schedule

        from matmul.core.kernel import matmul_module
        from matmul.schedules.metaschedule.database import apply_record

        sch = Schedule(matmul_module(SHAPE, "float32", "NN"))
        apply_record(sch, rec)
        kernel = CompiledKernel("metaschedule", SHAPE, "float32", "NN", facts, compile_module(sch, facts.target()),
                                sch.mod)
        assert verify(kernel, kind="int").ok


@pytest.mark.metaschedule
def test_metaschedule_variant_reads_the_running_profile(tuned_root, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tuned_root))
    sch = schedule("metaschedule", SHAPE)
    facts = host_facts()
    kernel = CompiledKernel("metaschedule", SHAPE, "float32", "NN", facts, compile_module(sch, facts.target()),
                            sch.mod)
    assert verify(kernel).ok
    # what a bench case saves: the ledger's trials and the best record's time as tuned
    from matmul.core.registry import variant_decisions

    d = variant_decisions("metaschedule", SHAPE)
    assert d["trials"] == 6 and d["profile"] == facts.profile
    assert d["run_us"] == pytest.approx(min(_mean_s(r) for r in records(SHAPE, root=tuned_root)) * 1e6)


def test_a_shape_without_record_names_the_command(tuned_root, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tuned_root))
    other = MatmulShape(16, 32, 25)
    assert not has_record(other)
    with pytest.raises(NoRecordError, match=r"no MetaSchedule record .* `python -m matmul tune --shape 16 32 25`"):
        schedule("metaschedule", other)


@pytest.mark.metaschedule
def test_workload_with_the_trials_already_is_not_tuned_again(tuned_root):
    before = (profile_dir(host_facts(), tuned_root) / workload_key(SHAPE) / RECORD_FILE).read_bytes()
    out = tune_workload(SHAPE, trials=6, root=tuned_root, search=FAST)
    assert out.skipped and out.trials_now == 6  # and the record below is untouched: nothing was tuned
    assert (profile_dir(host_facts(), tuned_root) / workload_key(SHAPE) / RECORD_FILE).read_bytes() == before


def _other_facts():
    """Facts for a CPU profile that is not the host's."""
    host = host_facts()
    for mcpu in ("skylake-avx512", "znver4", "haswell"):
        if mcpu != host.mcpu:
            return facts_for({"kind": "llvm", "mcpu": mcpu, "num-cores": host.num_cores})
    raise AssertionError("unreachable")


@pytest.mark.metaschedule
def test_records_from_another_profile_are_never_used(tuned_root, tmp_path):
    other = _other_facts()
    assert other.profile != host_facts().profile
    # another profile's folder is another database: nothing there
    with pytest.raises(NoRecordError, match=other.profile):
        records(SHAPE, facts=other, root=tuned_root)
    # records copied by hand into the wrong profile's folder are refused, not served
    import shutil

    src = profile_dir(host_facts(), tuned_root)
    shutil.copytree(src, profile_dir(other, tuned_root))
    with pytest.raises(DatabaseError, match="records from one CPU must never serve another"):
        records(SHAPE, facts=other, root=tuned_root)


@pytest.mark.metaschedule
def test_prune_keeps_the_fastest_records_and_the_trial_count(tuned_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tuned_root, root)
    pdir = profile_dir(host_facts(), root)
    times = sorted(sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in records(SHAPE, root=root))
    assert prune(pdir, keep=2) == {workload_key(SHAPE): (6, 2)}
    kept = [sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in records(SHAPE, root=root)]
    assert kept == pytest.approx(times[:2])
    entry = read_ledger(pdir)[workload_key(SHAPE)]
    assert entry.trials == 6 and entry.kept == 2
    with pytest.raises(ValueError, match="keep must be a positive integer"):
        prune(pdir, keep=0)


def test_prune_of_an_empty_folder_says_so(tmp_path):
    with pytest.raises(DatabaseError, match="holds no tuned workloads"):
        prune(tmp_path)


def _tune_cmd(root: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "matmul", "tune", "--shape", *map(str, (SHAPE.M, SHAPE.K, SHAPE.N)),
            "--trials", str(trials), "--per-iter", "3", "--population", "16", "--seed", "2", "--root", str(root)]


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


@pytest.mark.metaschedule
def test_resume_after_sigkill_loses_no_record(tmp_path):
    """Kill the tuner (and its workers) with SIGKILL once a batch is saved; start it again."""
    pdir = profile_dir(host_facts(), tmp_path)
    staged = pdir / STAGING / workload_key(SHAPE) / RECORD_FILE
    proc = subprocess.Popen(_tune_cmd(tmp_path, 9), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 900  # imports, workers, one batch: tens of seconds, slower under load
        while len(_lines(staged)) < 3:
            assert proc.poll() is None, f"tuning ended before it could be killed:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "no batch saved within 900 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    survived = _lines(staged)
    assert 3 <= len(survived) < 9
    # A kill can also cut a record in half mid-write: the resumed run keeps the complete lines.
    with staged.open("a") as fh:
        fh.write('[0, [{"insts": [')
    again = subprocess.run(_tune_cmd(tmp_path, 9), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(survived)} measured before)" in again.stderr
    final = _lines(pdir / workload_key(SHAPE) / RECORD_FILE)
    assert set(survived) <= set(final)  # every record saved before the kill is still there
    assert len(final) == 9
    assert len({json.dumps(json.loads(ln)[1][0]) for ln in final}) == 9  # no schedule measured twice
    assert read_ledger(pdir)[workload_key(SHAPE)].trials == 9
    assert not (pdir / STAGING / workload_key(SHAPE)).exists()
    # the damaged original was kept, not thrown away
    (cut,) = (pdir / DAMAGED).glob(f"{workload_key(SHAPE)}-{RECORD_FILE}.cut-*")
    assert cut.read_text().endswith('[0, [{"insts": [')
    # progress lines: shape i of n, trials, best so far, time left
    assert "[1/1] M16xK32xN24: trials 9/9, best" in again.stderr and "left" in again.stderr


@pytest.mark.parametrize("victim", [WORKLOAD_FILE, RECORD_FILE])
def test_corrupt_database_is_reported_and_left_untouched(tmp_path, victim):
    pdir = profile_dir(host_facts(), tmp_path)
    shard = pdir / workload_key(SHAPE)
    shard.mkdir(parents=True)
    shipped = default_root() / "znver3-2c-simd8-t2" / "NN-float32-M16-K768-N768"  # well-formed lines
    (shard / WORKLOAD_FILE).write_text((shipped / WORKLOAD_FILE).read_text().splitlines()[0] + "\n")
    (shard / RECORD_FILE).write_text((shipped / RECORD_FILE).read_text().splitlines()[0] + "\n")
    (shard / victim).write_text('["truncated", {"rec\n')
    (pdir / LEDGER_FILE).write_text(json.dumps({"workloads": {workload_key(SHAPE): {
        "M": 16, "K": 32, "N": 24, "layout": "NN", "dtype": "float32", "trials": 1}}}))
    before = {p: p.read_bytes() for p in pdir.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    with pytest.raises(DatabaseError, match=rf"{shard / victim} is corrupt at line 1"):
        open_database(shard)
    with pytest.raises(DatabaseError, match=rf"{shard / victim} is corrupt"):
        records(SHAPE, root=tmp_path)
    with pytest.raises(DatabaseError, match="corrupt"):  # tuning more trials must not touch it either
        tune_workload(SHAPE, trials=2, root=tmp_path, search=FAST)
    with pytest.raises(DatabaseError, match="corrupt"):
        prune(pdir)
    assert {p: p.read_bytes() for p in pdir.rglob("*") if p.is_file() and p.name != LOCK_FILE} == before


def test_corrupt_ledger_is_reported_and_left_untouched(tmp_path):
    pdir = profile_dir(host_facts(), tmp_path)
    pdir.mkdir(parents=True)
    (pdir / LEDGER_FILE).write_text('{"workloads": {"x": ')
    with pytest.raises(DatabaseError, match=rf"tuning ledger {pdir / LEDGER_FILE} is corrupt"):
        tune_workload(SHAPE, trials=2, root=tmp_path, search=FAST)
    assert (pdir / LEDGER_FILE).read_text() == '{"workloads": {"x": '


def test_missing_database_names_the_path_and_the_command(tmp_path):
    with pytest.raises(DatabaseError, match=rf"{WORKLOAD_FILE} does not exist.*python -m matmul tune"):
        open_database(tmp_path)


@pytest.mark.parametrize("trials", [0, -3, 2.5, True])
def test_tune_refuses_bad_trial_counts(tmp_path, trials):
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        tune(SHAPE, tmp_path, trials=trials)
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        tune_workload(SHAPE, trials=trials, root=tmp_path)
    with pytest.raises(ValueError, match="per_iter must be a positive integer"):
        SearchSettings(per_iter=trials)
    with pytest.raises(ValueError, match="population must be a positive integer"):
        SearchSettings(population=trials)


def test_candidate_build_skips_the_tensor_intrinsic_tables():
    # The default MetaSchedule build imports every tensor-intrinsic table in
    # each new worker (24-35 s here), past the builder timeout.
    code = (
        "import sys\n"
        "from matmul import MatmulShape, host_facts\n"
        "from matmul.core.kernel import matmul_module\n"
        "from matmul.schedules.metaschedule.workers import build_candidate\n"
        "m = build_candidate(matmul_module(MatmulShape(4, 8, 4), 'float32', 'NN'), host_facts().target())\n"
        "assert hasattr(m, 'export_library'), type(m)\n"
        "assert 'tvm.s_tir.tensor_intrin' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.metaschedule
def test_traces_table_reads_the_tiles_and_steps_of_each_record(tuned_root, tmp_path, capsys):
    import pandas as pd

    from matmul.cli import main

    out = tmp_path / "traces.csv"
    assert main(["traces", "--root", str(tuned_root), "--top", "6", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inner_j" in printed and "cache_write" in printed
    df = pd.read_csv(out)
    assert len(df) == len(records(SHAPE, root=tuned_root)) and list(df["rank"]) == list(range(1, len(df) + 1))
    for _, row in df.iterrows():  # the sampled tiles are perfect tilings of the loops
        assert row.i0 * row.i1 * row.i2 * row.i3 == SHAPE.M
        assert row.j0 * row.j1 * row.j2 * row.j3 == SHAPE.N
        assert row.k0 * row.k1 == SHAPE.K
        assert row.inner_j == row.j3
        assert row.unroll_step in (0, 16, 64, 512)
        # 0: the sampled schedule left the block serial (tiny workloads do)
        assert 0 <= row.parallel_extent <= SHAPE.M * SHAPE.N
        assert row.parallel_extent == 0 or (SHAPE.M * SHAPE.N) % row.parallel_extent == 0
    assert (df["gflops"].diff().dropna() <= 1e-9).all()  # fastest first
    counts = pd.read_csv(out.with_name("traces-counts.csv"))
    inner = counts[counts["choice"] == "inner_j"]
    assert inner["count"].sum() == 1  # one workload: its best record


def test_traces_on_an_empty_profile_says_what_to_run(tmp_path, capsys):
    from matmul.cli import main

    assert main(["traces", "--root", str(tmp_path)]) == 2
    assert "run `python -m matmul tune` first" in capsys.readouterr().err


def _mean_s(rec) -> float:
    return sum(float(x) for x in rec.run_secs) / len(rec.run_secs)


@pytest.fixture
def slower_base(tuned_root, tmp_path):
    """A copy of the tuned database that keeps only its slowest successful record, so its best differs."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tuned_root, base)
    path = profile_dir(host_facts(), base) / workload_key(SHAPE) / RECORD_FILE
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    timed = [(sum(float(x) for x in json.loads(ln)[1][1]) / len(json.loads(ln)[1][1]), ln) for ln in lines]
    slowest = max(t for t in timed if t[0] < 1e8)
    path.write_text(slowest[1] + "\n")
    return base, slowest[0]


@pytest.mark.metaschedule
def test_compare_databases_times_each_databases_own_best_record(tuned_root, slower_base):
    from matmul.measure.compare_db import compare_databases

    base, base_s = slower_base
    new_s = min(_mean_s(r) for r in records(SHAPE, root=tuned_root))
    table, geo = compare_databases(base, tuned_root, [("tiny", SHAPE)], beside=("rule_based",), blocks=2, calls=2)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["base_recorded_ms"] == pytest.approx(base_s * 1e3)
    assert row["new_recorded_ms"] == pytest.approx(new_s * 1e3)
    assert base_s >= new_s
    assert row["base_trials"] == row["new_trials"] == 6  # from each folder's ledger
    for col in ("base_ms", "new_ms", "rule_based_ms", "new_over_base", "rule_based_over_new", "spread"):
        assert row[col] > 0, col
    assert row["new_over_base"] == pytest.approx(row["base_ms"] / row["new_ms"])
    assert row["rule_based_over_new"] == pytest.approx(row["new_ms"] / row["rule_based_ms"])
    assert list(geo["kernel"]) == ["tiny", "all"]
    assert geo.set_index("kernel").loc["all", "new_over_base"] == pytest.approx(row["new_over_base"])


@pytest.mark.metaschedule
def test_compare_db_command_writes_its_tables(tuned_root, slower_base, tmp_path, capsys):
    import pandas as pd

    from matmul.cli import main

    base, _ = slower_base
    out = tmp_path / "cmp.csv"
    shape = [str(SHAPE.M), str(SHAPE.K), str(SHAPE.N)]
    assert main(["compare-db", str(base), "--root", str(tuned_root), "--shape", *shape, "--beside",
                 "--blocks", "2", "--calls", "2", "--csv", str(out)]) == 0
    assert "new_over_base" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == 1 and df.loc[0, "shape"] == f"M{SHAPE.M}xK{SHAPE.K}xN{SHAPE.N}"
    assert not any(c.endswith("_over_new") for c in df.columns)  # nothing timed beside
    assert pd.read_csv(out.with_name("cmp-geomean.csv"))["kernel"].tolist()[-1] == "all"
    # odd block counts cannot be mirrored
    assert main(["compare-db", str(base), "--root", str(tuned_root), "--shape", *shape, "--blocks", "3"]) == 2
    assert "blocks must be an even number" in capsys.readouterr().err


def test_compare_db_without_records_names_both_folders(tuned_root, tmp_path, capsys):
    from matmul.cli import main

    empty = tmp_path / "empty"
    assert main(["compare-db", str(empty), "--root", str(tuned_root),
                 "--shape", str(SHAPE.M), str(SHAPE.K), str(SHAPE.N)]) == 2
    err = capsys.readouterr().err
    assert f"skipped M{SHAPE.M}xK{SHAPE.K}xN{SHAPE.N}: no record in {profile_dir(host_facts(), empty)}" in err
    assert "no shape has a record in both" in err


@pytest.mark.metaschedule
def test_a_second_tuning_run_keeps_metaschedule_as_quiet_as_asked(tmp_path, capsys):
    """MetaSchedule sets its own logger to DEBUG during a run; from the second run
    on, every task table used to reach stdout even though `tune` asks for warnings only."""
    import logging

    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    old = ms_log.level
    ms_log.setLevel(logging.WARNING)
    try:
        for n in (1, 2):
            tune(SHAPE, tmp_path / f"db{n}", trials=2, search=SearchSettings(per_iter=2, population=16, seed=1))
            assert ms_log.level == logging.WARNING
        out = capsys.readouterr().out
        assert "Total trials" not in out and "TaskScheduler" not in out
    finally:
        ms_log.setLevel(old)
