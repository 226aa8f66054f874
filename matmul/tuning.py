"""MetaSchedule tuning into a JSON database, and lookups from it.

A database folder holds MetaSchedule's two JSON-lines files. They are only
ever appended to by TVM; this module checks that they parse before handing
them over, so a corrupt or truncated file is reported with its path and line
instead of being rewritten or crashing the process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from .hardware import HostFacts, configure_runtime_threads, host_facts
from .kernel import matmul_module
from .workloads import MatmulShape

log = logging.getLogger(__name__)

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


class DatabaseError(RuntimeError):
    """A tuning database is missing or cannot be read."""


def check_database_files(work_dir: str | Path) -> tuple[Path, Path]:
    """Check that both database files exist and every line is JSON.

    Raises
    ------
    DatabaseError
        Naming the missing file, or the file and line that does not parse.
    """
    work_dir = Path(work_dir)
    paths = (work_dir / WORKLOAD_FILE, work_dir / RECORD_FILE)
    for path in paths:
        if not path.is_file():
            raise DatabaseError(
                f"tuning database file {path} does not exist; "
                "run `python -m matmul tune` to create the database, or point to the folder that holds "
                f"{WORKLOAD_FILE} and {RECORD_FILE}"
            )
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatabaseError(
                        f"tuning database file {path} is corrupt at line {lineno} ({err.msg}); "
                        "it was left untouched: repair or move it away, then tune again"
                    ) from None
    return paths


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """Open an existing database folder read-append, after :func:`check_database_files`."""
    workload, record = check_database_files(work_dir)
    return ms.database.JSONDatabase(
        path_workload=str(workload), path_tuning_record=str(record), allow_missing=False
    )


#: Seconds a builder worker may take per candidate. The first candidate of a
#: fresh worker pays the worker's imports (TVM, and PyTorch when installed,
#: which tvm_ffi imports eagerly).
BUILD_TIMEOUT_S = 90


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params=None) -> tvm.runtime.Module:
    """MetaSchedule's default CPU build, without importing ``tvm.s_tir.tensor_intrin``.

    The default build imports every tensor-intrinsic table (CUDA, ROCm,
    Hexagon, ARM) in each new builder worker: 24 s on the 2-core machine, 35 s
    with PyTorch installed, beyond the default 30 s timeout, so every
    candidate failed to build. Plain fp32 matmul on a CPU tensorizes nothing.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def tune(
    shape: MatmulShape,
    work_dir: str | Path,
    *,
    trials: int,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    seed: int | None = None,
) -> ms.database.JSONDatabase:
    """Tune one canonical matmul with MetaSchedule; records are appended to ``work_dir``.

    Existing files are checked first and never replaced.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    facts = facts or host_facts()
    configure_runtime_threads()
    work_dir = Path(work_dir)
    if any((work_dir / name).exists() for name in (WORKLOAD_FILE, RECORD_FILE)):
        check_database_files(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    return ms.tune_tir(
        matmul_module(shape, dtype, layout),
        facts.target(),
        work_dir=str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=min(trials, 64),
        builder=ms.builder.LocalBuilder(f_build=build_candidate, timeout_sec=BUILD_TIMEOUT_S),
        seed=seed,
    )


def best_schedule(
    database: ms.database.Database,
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
) -> Schedule | None:
    """The best recorded schedule for a kernel, or None when the database has none."""
    facts = facts or host_facts()
    mod = matmul_module(shape, dtype, layout)
    if not database.has_workload(mod):
        return None
    return ms.tir_integration.compile_tir(database, mod, facts.target())


__all__ = ["BUILD_TIMEOUT_S", "DatabaseError", "build_candidate", "best_schedule", "check_database_files", "open_database", "tune"]
