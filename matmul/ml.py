"""Learned schedules: a LightGBM model picks the rule template's config for a shape, with no search.

Data
    :func:`dataset` turns every tuning record of a profile into one table
    row: the template records of :mod:`matmul.template` (a measured config
    and its speedup over the rules' config) and the MetaSchedule records of
    :mod:`matmul.tuning` (their traces read as the same knobs: task tile,
    register tile, reduction tile, innermost j, unroll step, cache_write,
    decompose_reduction). Features describe the shape (M, K, N, layout, dtype
    and derived sizes and divisibilities), the hardware facts, and for
    template rows the config itself (tasks per thread, padding waste, the
    working sets against L1 and L2, and each knob's distance from the rules'
    choice).

Model
    A LightGBM regressor of a config's log speedup over the rules' config,
    from shape, hardware and config features; the variant takes the
    candidate with the highest prediction. Why this and not the
    alternatives: 24 shapes give 24 "best config" rows, too few for one
    classifier per knob; a ranker learns from every config but its targets
    are each shape's argmax, and the sweep's measurements are noisy (the
    rules' config timed against itself read 0.76x to 1.51x, std 0.17), so
    the argmax is mostly the luckiest measurement. A regressor averages that
    noise over every record (~670) and predicts in the unit measured, so the
    variant can demand a margin: it leaves the rules' config only when the
    predicted gain exceeds :data:`MARGIN`. Candidates come from the template,
    so a prediction is legal by construction. MetaSchedule's records
    train nothing: its schedules are a different template (4-level tiling,
    auto-unroll pragmas) whose knobs the rule template cannot replay, and on
    this machine they run 1.5x slower than the rules' config, so learning
    them would cap the learned variant at MetaSchedule's speed. They stay in
    the dataset for analysis.

    Training is deterministic: fixed seeds, ``deterministic=true``,
    ``force_row_wise=true``, one thread, so the same data gives the same
    model text. Models are saved in LightGBM's own text format with a JSON
    sidecar (schema, LightGBM version, feature list, data hash, model hash,
    profile); nothing is pickled and loading never runs code from a file.

Prediction
    :func:`predict` scores the shape's candidate configs, clamps the best one
    to the shape and checks it. A missing, corrupt or version-mismatched
    model, or an illegal config, falls back to the rules' config; the reason
    is logged and returned, and the benchmark saves it in ``extra_info``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .evidence import _commit
from .hardware import HostFacts, host_facts
from .kernel import check_layout
from .rules import RuleConfig, RuleError, _itemsize, _l1, _l2, decide, vector_registers
from .template import (
    CONFIGS_DEFAULT,
    candidate_configs,
    config_from_dict,
    config_key,
    read_records,
    workload_files,
)
from .workloads import MatmulShape

log = logging.getLogger("matmul.ml")

#: Version of the feature set and sidecar; a model of another schema is refused.
SCHEMA = 1
#: ``$MATMUL_MODEL_ROOT``, else ``models/`` beside the package.
MODEL_ROOT_ENV = "MATMUL_MODEL_ROOT"
MODEL_NAME = "ml_guided"
#: Leave the rules' config only for a predicted gain above this (log units,
#: ~5%). Leave-one-shape-out with margins 0, 0.03 and 0.06 gave held-out
#: geometric means of 0.995, 0.999 and 1.012 over the rules' config (as the
#: sweep measured them), so it sits between the two that helped.
MARGIN = 0.05
#: Targets are clipped to this (log) range: a config 2x slower than the rules'
#: teaches no more than one that is "only" 2x slower.
TARGET_CLIP = 0.7
SEED = 0

#: LightGBM parameters, sized for ~670 noisy rows.
PARAMS: dict[str, Any] = {
    "objective": "regression",
    "metric": "l2",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "max_depth": 4,
    "min_data_in_leaf": 5,  # min_child_samples: the default 20 leaves few splits on ~700 rows
    "min_sum_hessian_in_leaf": 1e-3,
    "min_data_in_bin": 1,
    "max_bin": 63,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbosity": -1,
}
ROUNDS = 150

SHAPE_FEATURES = ("M", "K", "N", "log2_M", "log2_MN", "k_over_n", "m_mod_8", "m_mod_16", "n_mod_96",
                  "layout_nt", "dtype_bytes")
HW_FEATURES = ("lanes", "vregs", "l1_kib", "l2_kib", "threads")
CONFIG_FEATURES = ("tm", "tn", "tk", "mr", "jpack", "unroll", "pack_b", "order_ifirst",
                   "tasks", "tasks_per_thread", "row_blocks", "panels", "k_blocks", "accumulators",
                   "panel_l1", "bblock_l2", "ctile_l2", "pad_waste", "m_mod_mr", "n_mod_jpack", "k_mod_tk")
RELATIVE_FEATURES = ("d_tm", "d_tn", "d_tk", "d_mr", "d_jpack", "d_unroll", "d_pack_b", "d_order", "is_rule")
FEATURES = SHAPE_FEATURES + HW_FEATURES + CONFIG_FEATURES + RELATIVE_FEATURES
#: The knobs whose prediction accuracy :func:`evaluate` reports.
TARGET_KNOBS = ("tm", "tn", "tk", "mr", "jpack", "unroll", "pack_b", "order")


class ModelError(RuntimeError):
    """A model file or its sidecar is missing, corrupt or of another version."""


# --------------------------------------------------------------------------- features
def shape_features(shape: MatmulShape, facts: HostFacts, dtype: str = "float32", layout: str = "NN") -> dict:
    return {
        "M": shape.M, "K": shape.K, "N": shape.N,
        "log2_M": math.log2(shape.M), "log2_MN": math.log2(shape.M * shape.N), "k_over_n": shape.K / shape.N,
        "m_mod_8": shape.M % 8, "m_mod_16": shape.M % 16, "n_mod_96": shape.N % 96,
        "layout_nt": int(check_layout(layout) == "NT"), "dtype_bytes": _itemsize(dtype),
        "lanes": facts.simd_lanes_fp32, "vregs": vector_registers(facts),
        "l1_kib": _l1(facts) / 1024, "l2_kib": _l2(facts) / 1024,
        "threads": facts.runtime_threads,
    }


def config_features(shape: MatmulShape, cfg: RuleConfig, rule: RuleConfig, facts: HostFacts,
                    dtype: str = "float32") -> dict:
    size = _itemsize(dtype)
    mp, np_, kp = cfg.padded(shape)
    tasks = cfg.tasks(shape)
    l1, l2 = _l1(facts), _l2(facts)
    return {
        "tm": cfg.tm, "tn": cfg.tn, "tk": cfg.tk, "mr": cfg.mr, "jpack": cfg.jpack, "unroll": cfg.unroll,
        "pack_b": int(cfg.pack_b), "order_ifirst": int(cfg.order == "ifirst"),
        "tasks": tasks, "tasks_per_thread": tasks / max(1, facts.runtime_threads),
        "row_blocks": cfg.tm // cfg.mr, "panels": cfg.tn // cfg.jpack, "k_blocks": kp // cfg.tk,
        "accumulators": cfg.mr * cfg.jpack // cfg.vector,
        "panel_l1": cfg.tk * cfg.jpack * size / l1, "bblock_l2": cfg.tk * cfg.tn * size / l2,
        "ctile_l2": cfg.tm * cfg.tn * size / l2,
        "pad_waste": mp * np_ * kp / (shape.M * shape.N * shape.K) - 1,
        "m_mod_mr": shape.M % cfg.mr, "n_mod_jpack": shape.N % cfg.jpack, "k_mod_tk": shape.K % cfg.tk,
        "d_tm": math.log2(cfg.tm / rule.tm), "d_tn": math.log2(cfg.tn / rule.tn),
        "d_tk": math.log2(cfg.tk / rule.tk), "d_mr": math.log2(cfg.mr / rule.mr),
        "d_jpack": math.log2(cfg.jpack / rule.jpack), "d_unroll": math.log2(cfg.unroll / rule.unroll),
        "d_pack_b": int(cfg.pack_b) - int(rule.pack_b), "d_order": int(cfg.order != rule.order),
        "is_rule": int(config_key(cfg) == config_key(rule)),
    }


def feature_rows(shape: MatmulShape, configs: Sequence[RuleConfig], facts: HostFacts, *,
                 dtype: str = "float32", layout: str = "NN") -> pd.DataFrame:
    """The model's input for each config of one shape, columns in :data:`FEATURES` order."""
    rule = decide(shape, facts, dtype=dtype, layout=layout).config
    base = shape_features(shape, facts, dtype, layout)
    rows = [{**base, **config_features(shape, c, rule, facts, dtype)} for c in configs]
    return pd.DataFrame(rows, columns=list(FEATURES))


def target(speedup_vs_rule: float, is_rule: bool) -> float:
    """The regression target: log speedup over the rules' config, clipped.

    The rules' own config is 0 by definition; its measured speedup over
    itself is kept in the dataset as a sample of the measurement noise.
    """
    if is_rule:
        return 0.0
    return float(np.clip(math.log(speedup_vs_rule), -TARGET_CLIP, TARGET_CLIP))


# --------------------------------------------------------------------------- the dataset
def _template_rows(facts: HostFacts, root: str | Path | None) -> list[dict]:
    from .tuning import workload_key

    rows = []
    for path in workload_files(facts, root):
        data = read_records(path, facts)
        w = data["workload"]
        shape, dtype, layout = MatmulShape(w["M"], w["K"], w["N"]), w["dtype"], w["layout"]
        recs = data["records"]
        if not recs:
            continue
        configs = [config_from_dict(r["config"]) for r in recs]
        feats = feature_rows(shape, configs, facts, dtype=dtype, layout=layout)
        best = max(float(r["speedup"]) for r in recs)
        for n, r in enumerate(recs):
            rel = float(r["speedup"]) / best
            row = {"source": "template", "workload": workload_key(shape, dtype, layout), "layout": layout,
                   "dtype": dtype, **feats.iloc[n].to_dict(), "order": configs[n].order,
                   "cache_write": True, "decompose_reduction": True, "auto_unroll": None,
                   "run_s": float(r["config_s"]), "speedup_vs_rule": float(r["speedup"]),
                   "rel": rel, "target": target(float(r["speedup"]), bool(feats["is_rule"][n])),
                   "record_file": path.name}
            rows.append(row)
    return rows


def _metaschedule_rows(facts: HostFacts, root: str | Path | None) -> list[dict]:
    from .traces import trace_features
    from .tuning import NoRecordError, profile_dir, read_ledger, records, workload_key

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


def data_hash(df: pd.DataFrame) -> str:
    """sha256 of a table's canonical CSV text (floats at full precision)."""
    text = df.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def write_dataset(df: pd.DataFrame, out: Path, *, facts: HostFacts | None = None,
                  root: str | Path | None = None) -> list[Path]:
    """Save as CSV or Parquet (by suffix), atomically, with ``<out>.json`` saying where it came from."""
    from .report import atomic_write

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
    from .template import template_dir
    from .tuning import profile_dir

    meta = {
        "schema": SCHEMA, "rows": len(df), "columns": list(df.columns),
        "sources": {s: int((df["source"] == s).sum()) for s in sorted(df["source"].unique())},
        "workloads": int(df["workload"].nunique()), "data_sha256": data_hash(df),
        "file_sha256": hashlib.sha256(payload).hexdigest(),
        "tuning_dir": str(profile_dir(facts, root)), "template_dir": str(template_dir(facts, root)),
        "profile": facts.profile, "facts": facts.as_dict(), "commit": _commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m matmul ml dataset",
    }
    atomic_write(out, payload)
    side = out.with_name(out.name + ".json")
    atomic_write(side, json.dumps(meta, indent=1) + "\n")
    return [out, side]


def read_dataset(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no dataset at {path}; write one with `python -m matmul ml dataset --out {path}`")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(f"dataset {path} does not parse ({err})") from None


# --------------------------------------------------------------------------- training
def training_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The template rows, in workload order."""
    t = df[df["source"] == "template"]
    if t.empty:
        raise ValueError("the dataset has no template records to train on; run `python -m matmul ml sweep`")
    missing = [c for c in FEATURES if c not in t]
    if missing:
        raise ValueError(f"the dataset lacks the feature column(s) {', '.join(missing)}; rebuild it with "
                         "`python -m matmul ml dataset`")
    return t.sort_values(["workload"], kind="stable").reset_index(drop=True)


def fit(train: pd.DataFrame, *, rounds: int = ROUNDS):
    """A deterministic LightGBM regressor on template rows (see :data:`PARAMS`)."""
    import lightgbm as lgb

    train = training_frame(train)
    ds = lgb.Dataset(train[list(FEATURES)].astype(float), label=train["target"].astype(float),
                     feature_name=list(FEATURES), free_raw_data=True,
                     params={"min_data_in_bin": PARAMS["min_data_in_bin"], "max_bin": PARAMS["max_bin"],
                             "verbosity": -1})
    return lgb.train(dict(PARAMS), ds, num_boost_round=rounds)


def model_dir(facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    env = os.environ.get(MODEL_ROOT_ENV)
    base = Path(root) if root else Path(env) if env else Path(__file__).resolve().parent.parent / "models"
    return base / (facts or host_facts()).profile


def model_paths(facts: HostFacts | None = None, root: str | Path | None = None) -> tuple[Path, Path]:
    d = model_dir(facts, root)
    return d / f"{MODEL_NAME}.txt", d / f"{MODEL_NAME}.json"


def train(df: pd.DataFrame, *, facts: HostFacts | None = None, root: str | Path | None = None,
          rounds: int = ROUNDS) -> tuple[list[Path], dict]:
    """Fit on every template row of ``df`` and save model text and sidecar atomically."""
    import lightgbm as lgb

    from .report import atomic_write

    facts = facts or host_facts()
    t = training_frame(df)
    booster = fit(t, rounds=rounds)
    text = booster.model_to_string()
    meta = {
        "schema": SCHEMA, "model": "lightgbm regression of log speedup over the rules' config",
        "lightgbm_version": lgb.__version__, "features": list(FEATURES), "params": PARAMS, "rounds": rounds,
        "target_clip": TARGET_CLIP, "margin": MARGIN, "configs_per_shape": CONFIGS_DEFAULT,
        "rows": len(t), "workloads": sorted(t["workload"].unique()), "data_sha256": data_hash(t),
        "model_sha256": hashlib.sha256(text.encode()).hexdigest(), "profile": facts.profile,
        "commit": _commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    model_path, side = model_paths(facts, root)
    atomic_write(model_path, text)
    atomic_write(side, json.dumps(meta, indent=1) + "\n")
    return [model_path, side], meta


# --------------------------------------------------------------------------- loading
@dataclasses.dataclass(frozen=True)
class LoadedModel:
    booster: Any
    meta: dict
    path: Path


def load_model(facts: HostFacts | None = None, root: str | Path | None = None) -> LoadedModel:
    """Load the profile's model from its text file, after checking the sidecar.

    Raises
    ------
    ModelError
        Missing files, a sidecar that does not parse, another schema, LightGBM
        version or feature list, a model file whose hash differs from the
        sidecar's, or text LightGBM cannot read.
    """
    facts = facts or host_facts()
    model_path, side = model_paths(facts, root)
    if not model_path.is_file() or not side.is_file():
        raise ModelError(f"no model for profile {facts.profile} at {model_path} (with {side.name}); "
                         "train one with `python -m matmul ml train`")
    stat = model_path.stat()
    return _load(str(model_path), str(side), stat.st_mtime_ns, stat.st_size, side.stat().st_mtime_ns)


def _check_model_text(text: str) -> None:
    """Refuse model text LightGBM would read past the end of.

    LightGBM slices the trees by the byte sizes in ``tree_sizes=`` and aborts
    the process (not an exception) on a truncated model, so the layout is
    checked first: the trees fill exactly the declared bytes, and the file
    ends with the parameter block.
    """
    import re

    m = re.search(r"^tree_sizes=([0-9 ]*)$", text, re.M)
    if not m or "\nTree=0\n" not in text or "\nend of trees\n" not in text \
            or "\nend of parameters\n" not in text or "\npandas_categorical:" not in text:
        raise ModelError("not a complete LightGBM text model (tree_sizes, trees or parameter block missing)")
    sizes = [int(x) for x in m.group(1).split()]
    start, end = text.index("\nTree=0\n") + 1, text.index("\nend of trees\n") + 1
    if start + sum(sizes) != end or text.count("\nTree=") != len(sizes):
        raise ModelError(f"its {len(sizes)} trees do not fill the bytes tree_sizes declares (truncated or edited)")


@functools.lru_cache(maxsize=8)
def _load(model_path: str, side: str, _mtime: int, _size: int, _side_mtime: int) -> LoadedModel:
    import lightgbm as lgb

    try:
        meta = json.loads(Path(side).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"model sidecar {side} is corrupt ({err}); retrain with `python -m matmul ml train`") \
            from None
    if meta.get("schema") != SCHEMA:
        raise ModelError(f"model {model_path} has schema {meta.get('schema')!r}, this code reads schema {SCHEMA}; "
                         "retrain with `python -m matmul ml train`")
    if meta.get("lightgbm_version") != lgb.__version__:
        raise ModelError(f"model {model_path} was trained with LightGBM {meta.get('lightgbm_version')!r}, "
                         f"this is {lgb.__version__}; retrain with `python -m matmul ml train`")
    if meta.get("features") != list(FEATURES):
        raise ModelError(f"model {model_path} was trained on other features; retrain with "
                         "`python -m matmul ml train`")
    raw = Path(model_path).read_bytes()
    if hashlib.sha256(raw).hexdigest() != meta.get("model_sha256"):
        raise ModelError(f"model {model_path} does not match the hash in {Path(side).name} (corrupt or edited); "
                         "retrain with `python -m matmul ml train`")
    try:
        text = raw.decode("utf-8")
        _check_model_text(text)
        booster = lgb.Booster(model_str=text)
    except Exception as err:  # ModelError, LightGBMError, UnicodeDecodeError
        raise ModelError(f"LightGBM cannot read model {model_path} ({err}); retrain with "
                         "`python -m matmul ml train`") from None
    if booster.feature_name() != list(FEATURES):
        raise ModelError(f"model {model_path} names features other than its sidecar's; retrain it")
    return LoadedModel(booster, meta, Path(model_path))


# --------------------------------------------------------------------------- prediction
def clamp(cfg: RuleConfig, shape: MatmulShape, facts: HostFacts, dtype: str = "float32") -> tuple[RuleConfig, list]:
    """Fit a config's sizes to the shape and the machine; then check it.

    Tiles larger than the (register-tile padded) shape shrink to it, the
    vector width becomes the machine's, and the unroll step becomes a divisor
    of TK. Relations the clamp cannot repair (TN not a multiple of j-pack, a
    register tile over the register file) raise :class:`RuleError`.
    """
    from .rules import vector_lanes

    changed = []
    lanes = vector_lanes(facts, dtype)
    new = {}
    if cfg.vector != lanes:
        new["vector"] = lanes
        new["writeback"] = lanes
    mp = -(-shape.M // cfg.mr) * cfg.mr
    np_ = -(-shape.N // cfg.jpack) * cfg.jpack
    kp = -(-shape.K // lanes) * lanes
    if cfg.tm > mp:
        new["tm"] = mp
    if cfg.tn > np_:
        new["tn"] = np_
    if cfg.tk > kp:
        new["tk"] = kp
    tk = new.get("tk", cfg.tk)
    if isinstance(cfg.unroll, int) and cfg.unroll >= 1 and tk % cfg.unroll:
        new["unroll"] = math.gcd(cfg.unroll, tk)
    for k, v in new.items():
        changed.append(f"{k} {getattr(cfg, k)}->{v}")
    out = dataclasses.replace(cfg, **new).check()
    regs = vector_registers(facts)
    acc = out.mr * out.jpack // out.vector + out.jpack // out.vector + 1
    if acc > regs:
        raise RuleError(f"illegal predicted config: register tile {out.mr} x {out.jpack} needs {acc} vector "
                        f"registers, the machine has {regs}")
    return out, changed


@dataclasses.dataclass(frozen=True)
class Prediction:
    config: RuleConfig
    fallback: str | None  # why the rules' config is used, or None
    decisions: dict


#: Replaceable in tests: the candidate set the model scores.
_candidates: Callable[..., list[RuleConfig]] = candidate_configs


def predict(shape: MatmulShape, facts: HostFacts | None = None, *, dtype: str = "float32", layout: str = "NN",
            root: str | Path | None = None) -> Prediction:
    """The model's config for a shape, or the rules' with the reason it fell back."""
    facts = facts or host_facts()
    rule = decide(shape, facts, dtype=dtype, layout=layout).config
    info: dict[str, Any] = {"profile": facts.profile, "threads": facts.runtime_threads, "search_trials": 0}
    try:
        model = load_model(facts, root)
        configs = _candidates(shape, facts, dtype=dtype, layout=layout,
                              limit=int(model.meta.get("configs_per_shape", CONFIGS_DEFAULT)))
        feats = feature_rows(shape, configs, facts, dtype=dtype, layout=layout)
        scores = model.booster.predict(feats.astype(float))
        best = pick(scores, feats["is_rule"].to_numpy(), float(model.meta.get("margin", MARGIN)))
        cfg, changed = clamp(configs[best], shape, facts, dtype)
        rule_idx = np.flatnonzero(feats["is_rule"].to_numpy())
        gain = float(scores[best] - scores[rule_idx[0]]) if len(rule_idx) else None
        info.update(model=str(model.path), model_sha256=model.meta.get("model_sha256"), candidates=len(configs),
                    predicted_speedup=math.exp(float(scores[best])), predicted_gain_over_rules=gain,
                    clamped=changed, rules_config=config_key(rule) == config_key(cfg))
        return Prediction(cfg, None, {"source": "model", "fallback": None, **cfg.as_dict(), **info})
    except (ModelError, RuleError) as err:
        reason = str(err)
    log.warning("ml_guided falls back to rule_based for %s (%s, %s): %s", shape, dtype, layout, reason)
    return Prediction(rule, reason, {"source": "rule_based", "fallback": reason, **rule.as_dict(), **info})


def pick(scores: np.ndarray, is_rule: np.ndarray, margin: float = MARGIN) -> int:
    """Index of the best-scored config, or of the rules' config unless the best beats it by ``margin``."""
    best = int(np.argmax(scores))
    rule = np.flatnonzero(is_rule)
    if len(rule) and scores[best] - scores[rule[0]] < margin:
        return int(rule[0])
    return best


# --------------------------------------------------------------------------- evaluation
def leave_one_out(df: pd.DataFrame, *, rounds: int = ROUNDS,
                  progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Leave-one-shape-out: for each workload, train on the others and pick among its configs.

    Returns one row per held-out workload: the picked config's knobs, the
    measured-best config's knobs, the pick's speedup over the rules' config
    as the sweep measured it (``sweep_speedup``: 1 when it is the rules'
    config; an unbiased if noisy estimate, since the pick never saw it), and
    both configs' speed relative to the shape's best measurement
    (``rel_pick``, ``rel_rule``).
    """
    t = training_frame(df)
    keys = sorted(t["workload"].unique())
    if len(keys) < 2:
        raise ValueError("leave-one-shape-out needs template records of at least 2 workloads")
    rows = []
    for n, key in enumerate(keys, 1):
        held = t[t["workload"] == key].reset_index(drop=True)
        booster = fit(t[t["workload"] != key], rounds=rounds)
        scores = booster.predict(held[list(FEATURES)].astype(float))
        chosen = held.iloc[pick(scores, held["is_rule"].to_numpy())]
        best = held.iloc[int(held["rel"].idxmax())]
        rule = held[held["is_rule"] == 1]
        row = {"workload": key, "M": int(held["M"][0]), "K": int(held["K"][0]), "N": int(held["N"][0]),
               "configs": len(held), "picked_rules_config": bool(chosen["is_rule"]),
               "sweep_speedup": 1.0 if chosen["is_rule"] else float(chosen["speedup_vs_rule"]),
               "rel_pick": float(chosen["rel"]),
               "rel_rule": float(rule["rel"].iloc[0]) if len(rule) else float("nan")}
        for k in TARGET_KNOBS:
            row[f"pick_{k}"], row[f"best_{k}"] = chosen[k], best[k]
            row[f"rule_{k}"] = rule[k].iloc[0] if len(rule) else None
        rows.append(row)
        if progress:
            what = "the rules' config" if chosen["is_rule"] else f"{row['sweep_speedup']:.3f}x the rules' config"
            progress(f"[{n}/{len(keys)}] {key}: picked {what}")
    return pd.DataFrame(rows)


def knob_accuracy(loo: pd.DataFrame) -> pd.DataFrame:
    """Per knob: how often the held-out pick (and the rules' config) equals the measured best."""
    out = []
    for k in TARGET_KNOBS:
        out.append({"knob": k, "model_accuracy": float((loo[f"pick_{k}"] == loo[f"best_{k}"]).mean()),
                    "rules_accuracy": float((loo[f"rule_{k}"] == loo[f"best_{k}"]).mean())})
    return pd.DataFrame(out)


def _config_of(row: pd.Series, prefix: str, shape: MatmulShape, facts: HostFacts, dtype: str) -> RuleConfig:
    base = decide(shape, facts, dtype=dtype).config
    d = base.as_dict()
    for k in TARGET_KNOBS:
        v = row[f"{prefix}_{k}"]
        d[k] = v if k == "order" else bool(v) if k == "pack_b" else int(v)
    return config_from_dict(d)


def measure_held_out(loo: pd.DataFrame, *, facts: HostFacts | None = None, blocks: int = 4, calls: int = 10,
                     progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Time each held-out pick beside rule_based and MetaSchedule's best, interleaved, in this run.

    Each of ``blocks`` rounds (an even number) times every variant once (at
    least ``calls`` calls, more for short kernels), in mirrored order (A B C,
    C B A, ...: each variant sees the same drift); a variant's time is the
    median of its blocks.
    """
    from .candidates import prepare
    from .paired import BLOCK_S, calls_for, time_interleaved
    from .template import config_name
    from .tuning import NoRecordError, has_record

    facts = facts or host_facts()
    rows = []
    for n, r in enumerate(loo.itertuples(index=False), 1):
        key = r.workload
        layout, dtype = key.split("-")[0], key.split("-")[1]
        shape = MatmulShape(r.M, r.K, r.N)
        cfg = _config_of(pd.Series(r._asdict()), "pick", shape, facts, dtype)
        cands = {"ml_guided": prepare(config_name(cfg), shape, layout=layout, dtype=dtype),
                 "rule_based": prepare("rule_based", shape, layout=layout, dtype=dtype)}
        if has_record(shape, dtype=dtype, layout=layout, facts=facts):
            try:
                cands["metaschedule"] = prepare("metaschedule", shape, layout=layout, dtype=dtype)
            except NoRecordError:
                pass
        times = time_interleaved(list(cands.values()), blocks=blocks,
                                 calls=calls_for(cands["rule_based"], calls, BLOCK_S))
        med = {k: float(np.median(v)) for k, v in zip(cands, times)}
        row = {"workload": key, "M": r.M, "K": r.K, "N": r.N, "ml_s": med["ml_guided"], "rule_s": med["rule_based"],
               "ms_s": med.get("metaschedule", float("nan"))}
        row["ml_vs_rule"] = row["rule_s"] / row["ml_s"]
        row["ml_vs_metaschedule"] = row["ms_s"] / row["ml_s"]
        rows.append(row)
        if progress:
            progress(f"[{n}/{len(loo)}] {key}: ml_guided {row['ml_vs_rule']:.3f}x rule_based, "
                     f"{row['ml_vs_metaschedule']:.3f}x metaschedule")
    return pd.DataFrame(rows)


__all__ = [
    "FEATURES",
    "PARAMS",
    "LoadedModel",
    "ModelError",
    "Prediction",
    "clamp",
    "data_hash",
    "dataset",
    "feature_rows",
    "fit",
    "pick",
    "target",
    "training_frame",
    "knob_accuracy",
    "leave_one_out",
    "load_model",
    "measure_held_out",
    "model_dir",
    "model_paths",
    "predict",
    "read_dataset",
    "train",
    "write_dataset",
]
