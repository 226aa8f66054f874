"""What a MetaSchedule database file must hold before TVM reads it.

TVM aborts the process on some well-formed but wrong lines (a decision that names no instruction of its
trace reads past an array: ``malloc(): invalid size``), so every line is checked in Python first; what
these checks cannot see TVM refuses with an error (:func:`~.database.open_database` names the folder).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


class DatabaseError(RuntimeError):
    """A tuning database or ledger is missing, corrupt, or from another target."""


def _bad(path: Path, lineno: int, why: str) -> DatabaseError:
    return DatabaseError(f"tuning database file {path} line {lineno} {why}; it was left untouched: "
                         "repair or move it away, then tune again")


def _workload_problem(obj: Any) -> str | None:
    """Why a workload line is not one MetaSchedule can read, or None.

    A line is ``[structural hash (digits), base64 of an 8-byte length and the module's JSON]``.
    """
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], str)):
        return "is not a MetaSchedule workload ([hash, base64 module])"
    if not obj[0].isdigit():
        return f"has a structural hash {obj[0][:20]!r} that is not a number"
    try:
        raw = base64.b64decode(obj[1], validate=True)
    except (binascii.Error, ValueError):
        return "holds a module that is not valid base64"
    if len(raw) < 8 or int.from_bytes(raw[:8], "little") != len(raw) - 8:
        return "holds a module whose length header does not match its size (cut or edited)"
    try:
        graph = json.loads(raw[8:])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "holds a module that is not JSON"
    if not (isinstance(graph, dict) and "root_index" in graph and isinstance(graph.get("nodes"), list)):
        return "holds a module that is not a TVM JSON graph"
    return None


def _record_problem(obj: Any, workloads: int | None) -> str | None:
    """Why a record line is not one MetaSchedule can read, or None.

    A line is ``[workload index, [trace, run seconds or null, target, argument info]]`` and the trace is
    ``[instructions, decisions]``.
    """
    shape_ok = (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int) and not isinstance(obj[0], bool)
                and isinstance(obj[1], list) and len(obj[1]) == 4)
    if not shape_ok:
        return "is not a MetaSchedule tuning record ([workload index, [trace, run_secs, target, args_info]])"
    index, (trace, run_secs, target, args_info) = obj
    if index < 0 or (workloads is not None and index >= workloads):
        return f"names workload {index}, but the workload file holds {workloads} workload(s)"
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(x, list) for x in trace)):
        return "has a trace that is not [instructions, decisions]"
    insts, decisions = trace
    if not all(isinstance(i, list) and len(i) == 4 and isinstance(i[0], str)
               and all(isinstance(x, list) for x in i[1:]) for i in insts):
        return "has an instruction that is not [kind, inputs, attributes, outputs]"
    if not all(isinstance(d, list) and len(d) == 2 and isinstance(d[0], int) and not isinstance(d[0], bool)
               and 0 <= d[0] < len(insts) for d in decisions):
        return f"has a decision that is not [instruction index below {len(insts)}, value]"
    if run_secs is not None and not (isinstance(run_secs, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in run_secs)):
        return "has run seconds that are not a list of numbers"
    if not (isinstance(target, dict) and isinstance(target.get("kind"), str)):
        return "has a target that is not a target object"
    if not isinstance(args_info, list):
        return "has argument info that is not a list"
    return None


def _json_lines(path: Path):
    """(line number, parsed object) of every non-empty line; DatabaseError naming the file otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise DatabaseError(f"tuning database file {path} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise _bad(path, line, "is not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DatabaseError(
                f"tuning database file {path} is corrupt at line {lineno} ({err.msg}); "
                "it was left untouched: repair or move it away, then tune again"
            ) from None


def check_jsonl(path: Path, workloads: int | None = None) -> int:
    """Number of entries in a database file, each checked in Python before TVM ever reads it.

    A workload file's lines must decode to modules; a record file's lines must
    have the record's structure and (given ``workloads``, or a workload file
    beside it) name a workload that exists. TVM aborts the process on a
    well-formed but wrong line, so nothing unchecked reaches it.

    Raises
    ------
    DatabaseError
        Naming the file, the line and what is wrong with it.
    """
    path = Path(path)
    is_record = path.name != WORKLOAD_FILE
    if is_record and workloads is None and (path.parent / WORKLOAD_FILE).is_file():
        workloads = sum(1 for _ in _json_lines(path.parent / WORKLOAD_FILE))
    count = 0
    for lineno, obj in _json_lines(path):
        problem = _record_problem(obj, workloads) if is_record else _workload_problem(obj)
        if problem:
            raise _bad(path, lineno, problem)
        count += 1
    return count


def check_database_files(work_dir: str | Path) -> tuple[Path, Path]:
    """Check that both database files exist and every line is a well-formed workload or record.

    Raises
    ------
    DatabaseError
        Naming the missing file, or the file and line that is wrong.
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
    check_jsonl(paths[1], check_jsonl(paths[0]))
    return paths


__all__ = ["RECORD_FILE", "WORKLOAD_FILE", "DatabaseError", "check_database_files", "check_jsonl"]
