"""The MetaSchedule database shipped in tuning_db/: it parses, it is pruned,
it meets the stated budget, and on its own CPU profile every BERT shape
builds from it and is correct."""

from __future__ import annotations

import json

import pytest

from matmul import bert_shapes, build_cached, host_facts, verify
from matmul.core.store import default_root, workload_key
from matmul.schedules.metaschedule.database import (
    KEEP_DEFAULT,
    LEDGER_FILE,
    RECORD_FILE,
    check_database_files,
    read_ledger,
)

SHIPPED = sorted(p for p in default_root().glob("*") if (p / LEDGER_FILE).is_file())
#: The least trials per workload the shipped databases promise (README).
MIN_TRIALS = 64


def test_a_database_ships():
    assert SHIPPED, f"no profile database under {default_root()}"


@pytest.mark.parametrize("pdir", SHIPPED, ids=lambda p: p.name)
def test_shipped_database_parses_is_pruned_and_met_its_budget(pdir):
    ledger = read_ledger(pdir)
    assert len(ledger) >= 24, f"{pdir}: {len(ledger)} workloads in the ledger; the shipped databases cover BERT's 24"
    mcpu = pdir.name.split("-", 1)[0]
    for key, entry in ledger.items():
        assert key == workload_key(entry.shape, entry.dtype, entry.layout)
        assert entry.trials >= MIN_TRIALS, f"{key}: {entry.trials} trials"
        assert json.loads(entry.target)["mcpu"] == mcpu  # filed under the CPU it was tuned on
        check_database_files(pdir / key)
        n = sum(1 for line in (pdir / key / RECORD_FILE).read_text().splitlines() if line.strip())
        assert 0 < n <= KEEP_DEFAULT and entry.kept == n


@pytest.mark.metaschedule
@pytest.mark.parametrize("workload", bert_shapes(), ids=lambda w: w.id)
def test_metaschedule_is_correct_on_every_shipped_bert_shape(workload):
    pdir = default_root() / host_facts().profile
    if not (pdir / workload_key(workload.shape)).is_dir():
        pytest.skip(f"no database shipped for this CPU profile ({host_facts().profile})")
    assert verify(build_cached("metaschedule", workload.shape, "float32", "NN"), seed=1).ok
