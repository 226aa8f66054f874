"""The learned model's data: every tuning record of a profile as one table row, saved with its provenance."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...core.hardware import HardwareError, HostFacts, host_facts
from ...core.store import (
    FACTS_FILE,
    atomic_write,
    default_root,
    profile_dir,
    provenance,
    read_profile_facts,
    workload_key,
)
from ...core.workloads import MatmulShape
from ..metaschedule.database import NoRecordError, read_ledger, records
from ..metaschedule.traces import trace_features
from ..rules import RuleConfig, decide
from ..template import (
    TEMPLATE_DIR,
    config_from_dict,
    config_key,
    read_records,
    record_basis,
    template_dir,
    workload_files,
)
from .features import feature_rows, shape_features, target

#: Version of the feature set and sidecars; a model or dataset of another schema is refused.
SCHEMA = 1


def rebased(recs: list[dict], rule: RuleConfig) -> list[dict]:
    """The records with every speedup over ``rule``, the rules' config now.

    Records measured over ``rule`` serve as they are; where a workload has any, they are the only ones used.
    Otherwise (a rule change moved the rules' config since the sweep) the records over the older config are
    divided by the speedup that sweep measured for ``rule``, so the rules' config reads 1 again and the
    others keep their order. A workload whose sweeps never measured ``rule`` gives nothing (sweep it again).
    """
    if not recs:
        return []
    now = config_key(rule)
    basis = [record_basis(r, recs) for r in recs]
    current = [r for r, b in zip(recs, basis) if b == now]
    if current:
        return current
    links = {b: float(r["speedup"]) for r, b in zip(recs, basis) if config_key(config_from_dict(r["config"])) == now}
    return [{**r, "speedup": float(r["speedup"]) / links[b]} for r, b in zip(recs, basis) if b in links]


def over_rules_copy(speedups: Sequence[float], is_rule: Sequence[bool]) -> list[float]:
    """A workload's sweep speedups read against the rules' config's own copy instead of the sweep's reference.

    The sweep times every config beside one reference build of the rules' config, and the rules' config
    itself beside it once more. Each build reads its own buffers, and where B is about the size of L2 the
    physical pages they land on move a kernel's time by up to 1.8x (bert-large's QKV at M = 1 on
    ``emeraldrapids-2c-simd16-t2``: the reference read 37 us, every other copy of the same config 20 us). A slow
    reference inflates every record of the workload alike; dividing by the rules' own record removes that
    common factor, so a config's target compares one copy with another, as the rules' config's 1 says. The
    rules' record keeps its raw ratio: it is the sample of measurement noise the margin is set from.
    """
    own = [s for s, r in zip(speedups, is_rule) if r]
    if not own:
        return list(speedups)
    base = math.exp(sum(math.log(s) for s in own) / len(own))
    return [s if r else s / base for s, r in zip(speedups, is_rule)]


def _template_rows(facts: HostFacts, root: str | Path | None) -> list[dict]:
    rows = []
    for path in workload_files(facts, root):
        data = read_records(path, facts)
        w = data["workload"]
        shape, dtype, layout = MatmulShape(w["M"], w["K"], w["N"]), w["dtype"], w["layout"]
        recs = rebased(data["records"], decide(shape, facts, dtype=dtype, layout=layout).config)
        if not recs:
            continue
        configs = [config_from_dict(r["config"]) for r in recs]
        feats = feature_rows(shape, configs, facts, dtype=dtype, layout=layout)
        is_rule = feats["is_rule"].to_numpy(bool)
        speedups = over_rules_copy([float(r["speedup"]) for r in recs], is_rule)
        ranked = [1.0 if is_rule[n] else s for n, s in enumerate(speedups)]  # the rules' config against its own copy
        best = max(ranked)
        for n, r in enumerate(recs):
            rel = ranked[n] / best
            row = {"source": "template", "workload": workload_key(shape, dtype, layout), "layout": layout,
                   "dtype": dtype, **feats.iloc[n].to_dict(), "order": configs[n].order,
                   "cache_write": True, "decompose_reduction": True, "auto_unroll": None,
                   "run_s": float(r["config_s"]), "speedup_vs_rule": speedups[n],
                   "rel": rel, "target": target(speedups[n], bool(feats["is_rule"][n])),
                   "record_file": path.name}
            rows.append(row)
    return rows


def _metaschedule_rows(facts: HostFacts, root: str | Path | None) -> list[dict]:
    rows = []
    for _, entry in sorted(read_ledger(profile_dir(facts, root)).items()):
        shape = entry.shape
        try:
            recs = records(shape, dtype=entry.dtype, layout=entry.layout, facts=facts, root=root)
        except NoRecordError:
            continue
        base = shape_features(shape, facts, entry.dtype, entry.layout)
        feats = [trace_features(r, shape, dtype=entry.dtype, layout=entry.layout) for r in recs]
        best = min(f["run_us"] for f in feats)
        for f in feats:
            ti, tj, tk = f["tile_i"], f["tile_j"], f["tile_k"]
            rel = best / f["run_us"]
            rows.append({
                "source": "metaschedule", "workload": workload_key(shape, entry.dtype, entry.layout),
                "layout": entry.layout, "dtype": entry.dtype, **base,
                "tm": int(np.prod(ti[1:])), "tn": int(np.prod(tj[1:])), "tk": tk[-1], "mr": ti[-1],
                "jpack": f["inner_j"], "unroll": None, "auto_unroll": f["unroll_step"],
                "pack_b": None, "order": None, "cache_write": f["cache_write"],
                "decompose_reduction": f["decompose_reduction"], "tasks": f["parallel_extent"],
                "run_s": f["run_us"] * 1e-6, "speedup_vs_rule": None, "rel": rel, "target": None,
                "record_file": f"{workload_key(shape, entry.dtype, entry.layout)}/",
            })
    return rows


def dataset(*, facts: HostFacts | None = None, root: str | Path | None = None,
            sources: Sequence[str] = ("template", "metaschedule")) -> pd.DataFrame:
    """One row per tuning record of the profile (every record, not only the best).

    Raises
    ------
    ValueError
        An unknown source, or no record at all (the message says how to make some).
    TemplateError, DatabaseError
        A record file is corrupt; it is named and left alone.
    """
    facts = facts or host_facts()
    known = ("template", "metaschedule")
    bad = [s for s in sources if s not in known]
    if bad or not sources:
        raise ValueError(f"unknown source(s) {bad or sources}; choose from: {', '.join(known)}")
    rows = []
    if "template" in sources:
        rows += _template_rows(facts, root)
    if "metaschedule" in sources:
        rows += _metaschedule_rows(facts, root)
    if not rows:
        raise ValueError(f"no tuning records for profile {facts.profile}; run `python -m matmul ml sweep` "
                         "(template records) or `python -m matmul tune` (MetaSchedule records) first")
    df = pd.DataFrame(rows)
    df.insert(2, "profile", facts.profile)
    return df.sort_values(["source", "workload"], kind="stable").reset_index(drop=True)


def profile_facts(root: str | Path | None = None) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Every profile under the tuning root that has rule-template records, with the facts of its machine.

    Returns ``(usable, skipped)``: profile name to facts, and profile name to why it cannot be used (its
    ``facts.json`` is missing or corrupt). The running host's own profile needs no file.
    """
    base = Path(root or default_root())
    host = host_facts()
    usable: dict[str, HostFacts] = {}
    skipped: dict[str, str] = {}
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
    for pdir in folders:
        if not any((pdir / TEMPLATE_DIR).glob("*.json")):
            continue
        try:
            usable[pdir.name] = read_profile_facts(pdir)
        except HardwareError as err:
            if pdir.name == host.profile and not (pdir / FACTS_FILE).exists():
                usable[pdir.name] = host
            else:
                skipped[pdir.name] = str(err)
    return usable, skipped


def cross_dataset(root: str | Path | None = None, *, exclude: Sequence[str] = (),
                  only: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rule-template records of every profile under the tuning root, each with its own machine's features.

    ``exclude`` leaves profiles out (leave-profile-out), ``only`` keeps just those. Returns the table and the
    profiles skipped with the reason. Raises ValueError when a named profile is unknown or nothing is left.
    """
    usable, skipped = profile_facts(root)
    names = set(usable) | set(skipped)
    unknown = [p for p in (*exclude, *(only or ())) if p not in names]
    if unknown:
        raise ValueError(f"no rule-template records for profile(s) {', '.join(unknown)} under "
                         f"{Path(root or default_root())}; profiles with records: {', '.join(sorted(names)) or 'none'}")
    keep = [p for p in sorted(usable) if p not in exclude and (only is None or p in only)]
    if not keep:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise ValueError("no profile left to read rule-template records from" + (f" ({why})" if why else ""))
    frames = [dataset(facts=usable[p], root=root, sources=["template"]) for p in keep]
    return pd.concat(frames, ignore_index=True), skipped


def data_hash(df: pd.DataFrame) -> str:
    """sha256 of a table's canonical CSV text (floats at full precision)."""
    text = df.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def write_dataset(df: pd.DataFrame, out: Path, *, facts: HostFacts | None = None,
                  root: str | Path | None = None) -> list[Path]:
    """Save as CSV or Parquet (by suffix), atomically, with ``<out>.json`` saying where it came from."""
    facts = facts or host_facts()
    out = Path(out)
    if out.suffix == ".csv":
        payload = df.to_csv(index=False, float_format="%.17g", lineterminator="\n").encode()
    elif out.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        payload = buf.getvalue()
    else:
        raise ValueError(f"dataset file {out} must end in .csv or .parquet")
    meta = {
        "schema": SCHEMA, "rows": len(df), "columns": list(df.columns),
        "sources": {s: int((df["source"] == s).sum()) for s in sorted(df["source"].unique())},
        "workloads": int(df["workload"].nunique()), "data_sha256": data_hash(df),
        "file_sha256": hashlib.sha256(payload).hexdigest(),
        "tuning_dir": str(profile_dir(facts, root)), "template_dir": str(template_dir(facts, root)),
        "profile": facts.profile, "facts": facts.as_dict(), **provenance(),
        "command": "python -m matmul ml dataset",
    }
    atomic_write(out, payload)
    side = out.with_name(out.name + ".json")
    atomic_write(side, json.dumps(meta, indent=1) + "\n")
    return [out, side]


#: Columns every dataset :func:`dataset` writes has, and training and evaluation read.
COLUMNS = ("source", "workload", "target", "speedup_vs_rule", "rel")


def check_columns(df: pd.DataFrame, what: str = "the dataset") -> pd.DataFrame:
    """``df`` itself; a ValueError naming the missing columns of :data:`COLUMNS` and how to rebuild otherwise."""
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {', '.join(missing)}; rebuild it with "
                         "`python -m matmul ml dataset`")
    return df


def read_dataset(path: Path) -> pd.DataFrame:
    """A dataset file :func:`write_dataset` wrote; a ValueError naming the file when it is missing, does not parse
    or lacks a column (see :func:`check_columns`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no dataset at {path}; write one with `python -m matmul ml dataset --out {path}`")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(f"dataset {path} does not parse ({err})") from None
    return check_columns(df, f"dataset {path}")


__all__ = ["COLUMNS", "SCHEMA", "check_columns", "cross_dataset", "data_hash", "dataset", "over_rules_copy",
           "profile_facts", "read_dataset", "rebased", "write_dataset"]
