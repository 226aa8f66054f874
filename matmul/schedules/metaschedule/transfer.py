"""Transferred tuning: another CPU profile's MetaSchedule records, rebuilt for this host.

``metaschedule[from=PROFILE]`` answers "how does the Zen 3 tuning do on this
CPU?" in one bench run, as an explicit choice: plain ``metaschedule`` never
reads another profile's folder.

The source's records are tried fastest first (by the time its own CPU
measured). Each is replayed on the canonical kernel, compiled for the target
asked for and, where that code runs on this host, checked against NumPy. A
record that fails a step is named with its reason in the case's decisions
(``skipped_records``) and the next one is tried; when none passes, the case
is unavailable and the message gives every record's reason.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ...core.hardware import HostFacts
from ...core.kernel import matmul_module
from ...core.runner import CompiledKernel, compile_module
from ...core.store import default_root, workload_key
from ...core.verify import VerificationError, verify
from ...core.workloads import MatmulShape
from .database import (
    LEDGER_FILE,
    RECORD_FILE,
    NoRecordError,
    apply_record,
    read_ledger,
    shard_records,
)
from .traces import trace_features

#: What a profile name may look like (it becomes a folder name).
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Errors TVM raises for a trace that does not replay or code that does not build (all RuntimeError subclasses).
_TVM_FAILURES = (RuntimeError, ValueError, TypeError)


class TransferError(ValueError):
    """A source profile that is malformed or has no database under the tuning root."""


def profiles(root: str | Path | None = None) -> list[str]:
    """The CPU profiles with a MetaSchedule database under ``root`` (default: the tuning root), sorted."""
    root = Path(root or default_root())
    if not root.is_dir():
        return []

    def tuned(p: Path) -> bool:
        return (p / LEDGER_FILE).is_file() or any((q / RECORD_FILE).is_file() for q in p.iterdir() if q.is_dir())

    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and tuned(p))


def check_source(profile: Any, root: str | Path | None = None) -> Path:
    """The folder of a source profile.

    Raises
    ------
    TransferError
        A name that is not a profile name, or one with no database under
        ``root`` (the message lists the profiles there).
    """
    root = Path(root or default_root())
    known = profiles(root)
    if not isinstance(profile, str) or not PROFILE_NAME.match(profile):
        raise TransferError(f"from={profile!r} is not a CPU profile name (for example znver3-2c-simd8-t2); "
                            f"profiles under {root}: {', '.join(known) or 'none'}")
    if profile not in known:
        raise TransferError(f"no MetaSchedule database for profile {profile!r} under {root}; "
                            f"profiles there: {', '.join(known) or 'none'}")
    return root / profile


@dataclasses.dataclass(frozen=True)
class Transfer:
    """The record chosen from a source profile for one workload on one target."""

    source: str
    record: ms.database.TuningRecord
    #: Rank among the source's successful records (0: the fastest on the source's CPU).
    rank: int
    #: (rank, reason) of each faster record that could not serve.
    skipped: tuple[tuple[int, str], ...]
    #: Whether the build was run and checked against NumPy here (False: built for a target this host cannot run).
    verified: bool


def _summary(err: BaseException) -> str:
    """The error's type and its last line (TVM puts the message after its traceback)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _target_problem(profile: str, record) -> str | None:
    """Why a record cannot belong to ``profile`` (its mcpu and core count are in the profile's name), or None."""
    attrs = record.target.attrs
    mcpu, cores = str(attrs.get("mcpu", "")), int(attrs.get("num-cores", 0))
    if profile.startswith(mcpu) and f"-{cores}c-" in profile:
        return None
    return f"it was tuned for {record.target}, not for profile {profile} (filed in the wrong folder)"


def _problem(rec, shape: MatmulShape, dtype: str, layout: str, facts: HostFacts, name: str) -> str | None:
    """Why one record cannot serve ``facts``' target: it does not replay, build or verify (None: it serves)."""
    sch = Schedule(matmul_module(shape, dtype, layout))
    try:
        apply_record(sch, rec)
    except _TVM_FAILURES as err:
        return f"its trace does not replay: {_summary(err)}"
    try:
        exe = compile_module(sch, facts.target())
    except _TVM_FAILURES as err:
        return f"it does not build for {facts.target()}: {_summary(err)}"
    if facts.missing_features:
        return None  # built for a CPU this host is not; nothing here can run it
    try:
        verify(CompiledKernel(name, shape, dtype, layout, facts, exe, sch.mod))
    except VerificationError as err:
        return f"it computes a wrong product here: {err}"
    return None


@functools.lru_cache(maxsize=256)
def _pick(source: str, root: str, shape: MatmulShape, dtype: str, layout: str, facts: HostFacts) -> Transfer:
    shard = Path(root) / source / workload_key(shape, dtype, layout)
    recs = shard_records(shard, shape, dtype=dtype, layout=layout)
    name = f"metaschedule[from={source}]"
    skipped = []
    for rank, rec in enumerate(recs):
        why = _target_problem(source, rec) or _problem(rec, shape, dtype, layout, facts, name)
        if why is None:
            return Transfer(source, rec, rank, tuple(skipped), not facts.missing_features)
        skipped.append((rank, why))
    raise NoRecordError(f"none of the {len(recs)} records in {shard} serves {facts.profile}: "
                        + "; ".join(f"record {r}: {why}" for r, why in skipped))


def transferred(shape: MatmulShape, *, source: str, facts: HostFacts, dtype: str = "float32", layout: str = "NN",
                root: str | Path | None = None) -> Transfer:
    """The fastest of ``source``'s records for the workload that replays, builds and verifies for ``facts``.

    Memoised per process: each record is built and checked once.

    Raises
    ------
    TransferError
        ``source`` is not a profile with a database under ``root``.
    NoRecordError
        ``source`` has no record for this workload, or none of them serves.
    DatabaseError
        A file of the source's database is corrupt.
    """
    root = Path(root or default_root())
    check_source(source, root)
    return _pick(source, str(root), shape, dtype, layout, facts)


def transfer_decisions(t: Transfer, shape: MatmulShape, *, facts: HostFacts, dtype: str = "float32",
                       layout: str = "NN", root: str | Path | None = None) -> dict[str, Any]:
    """What a bench case saves about a transferred record: its trace features (``run_us``: the source CPU's
    time), where it came from, its rank there, the records skipped and why, and the source's tuned trials."""
    d = trace_features(t.record, shape, dtype=dtype, layout=layout)
    entry = read_ledger(Path(root or default_root()) / t.source).get(workload_key(shape, dtype, layout))
    d.update(
        from_profile=t.source,
        record_rank=t.rank,
        skipped_records=[{"rank": r, "reason": why} for r, why in t.skipped],
        verified_here=t.verified,
        trials=entry.trials if entry else None,
        profile=facts.profile,
        threads=facts.runtime_threads,
    )
    return d


__all__ = ["PROFILE_NAME", "Transfer", "TransferError", "check_source", "profiles", "transfer_decisions",
           "transferred"]
