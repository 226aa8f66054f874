"""Learned schedules: a LightGBM model picks the rule template's config for a shape, with no search.

Data
    :func:`dataset` turns every tuning record of a profile into one table
    row: the template records of :mod:`matmul.schedules.template` (a measured config
    and its speedup over the rules' config) and the MetaSchedule records of
    :mod:`matmul.schedules.metaschedule` (their traces read as the same knobs: task tile,
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
    predicted gain exceeds :data:`MARGIN` or the sweep's own noise (the rules'
    config timed against itself), whichever is larger, and only for a shape
    inside the trained domain (the M, K and N ranges, layouts and dtypes the
    records cover); outside it the model keeps the rules' config and says
    why, rather than extrapolate. Candidates come from the template,
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
import functools
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core.hardware import HostFacts, host_facts
from ...core.store import PROJECT_DIR, atomic_write, provenance
from ...core.workloads import MatmulShape
from ..rules import RuleConfig, RuleError, decide, vector_lanes, vector_registers
from ..template import CONFIGS_DEFAULT, candidate_configs, config_key
from .data import SCHEMA, check_columns, data_hash
from .domain import check_domain, domain_of, outside, self_pair_noise
from .features import FEATURES, TARGET_CLIP, feature_rows

log = logging.getLogger(__name__)


#: ``$MATMUL_MODEL_ROOT``, else ``models/`` beside the package.
MODEL_ROOT_ENV = "MATMUL_MODEL_ROOT"
MODEL_NAME = "ml_guided"
#: Leave the rules' config only for a predicted gain above this (log units,
#: ~5%). Leave-one-shape-out with margins 0, 0.03 and 0.06 gave held-out
#: geometric means of 0.995, 0.999 and 1.012 over the rules' config (as the
#: sweep measured them), so it sits between the two that helped.
MARGIN = 0.05
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


class ModelError(RuntimeError):
    """A model file or its sidecar is missing, corrupt or of another version."""


class ModelMissing(ModelError):
    """No model file at all (as opposed to a broken one: only a missing model gives way to the cross model)."""


#: The folder under the model root of the model trained on every profile's records.
CROSS = "cross"



# --------------------------------------------------------------------------- training
def training_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The template rows, in workload order."""
    t = df[check_columns(df)["source"] == "template"]
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
    base = Path(root) if root else Path(env) if env else PROJECT_DIR / "models"
    return base / (facts or host_facts()).profile


def model_paths(facts: HostFacts | None = None, root: str | Path | None = None, *,
                cross: bool = False) -> tuple[Path, Path]:
    """The model text and sidecar of the profile's own model, or of the cross-profile one (``cross=True``)."""
    d = model_dir(facts, root).parent / CROSS if cross else model_dir(facts, root)
    return d / f"{MODEL_NAME}.txt", d / f"{MODEL_NAME}.json"


def train(df: pd.DataFrame, *, facts: HostFacts | None = None, root: str | Path | None = None,
          rounds: int = ROUNDS, cross: bool = False) -> tuple[list[Path], dict]:
    """Fit on every template row of ``df`` and save model text and sidecar atomically.

    ``cross=True`` saves it as the cross-profile model (``<root>/cross/``), whose rows may come from several
    profiles (``df["profile"]``); otherwise every row must be of the profile of ``facts``.
    """
    import lightgbm as lgb

    facts = facts or host_facts()
    t = training_frame(df)
    profiles = sorted(t["profile"].unique()) if "profile" in t else [facts.profile]
    if not cross and profiles != [facts.profile]:
        raise ValueError(f"a model for profile {facts.profile} must be trained on its own records only, not on "
                         f"those of {', '.join(profiles)}; train the cross-profile model for several")
    booster = fit(t, rounds=rounds)
    noise = self_pair_noise(t)
    text = booster.model_to_string()
    meta = {
        "schema": SCHEMA, "model": "lightgbm regression of log speedup over the rules' config",
        "lightgbm_version": lgb.__version__, "features": list(FEATURES), "params": PARAMS, "rounds": rounds,
        "target_clip": TARGET_CLIP, "noise": noise, "margin": max(MARGIN, noise),
        "domain": domain_of(t), "configs_per_shape": CONFIGS_DEFAULT,
        "rows": len(t), "workloads": sorted(t["workload"].unique()), "data_sha256": data_hash(t),
        "model_sha256": hashlib.sha256(text.encode()).hexdigest(), "profile": CROSS if cross else facts.profile,
        "trained_profiles": profiles, **provenance(),
    }
    model_path, side = model_paths(facts, root, cross=cross)
    atomic_write(model_path, text)
    atomic_write(side, json.dumps(meta, indent=1) + "\n")
    return [model_path, side], meta


# --------------------------------------------------------------------------- loading
@dataclasses.dataclass(frozen=True)
class LoadedModel:
    booster: Any
    meta: dict
    path: Path


def load_model(facts: HostFacts | None = None, root: str | Path | None = None, *,
               cross: bool = False) -> LoadedModel:
    """Load the profile's model (or the cross-profile one) from its text file, after checking the sidecar.

    Raises
    ------
    ModelError
        Missing files, a sidecar that does not parse, another schema, LightGBM
        version or feature list, a model file whose hash differs from the
        sidecar's, or text LightGBM cannot read.
    """
    facts = facts or host_facts()
    model_path, side = model_paths(facts, root, cross=cross)
    if not model_path.is_file() or not side.is_file():
        what, cmd = ("no cross-profile model", "ml train --cross") if cross else \
            (f"no model for profile {facts.profile}", "ml train")
        raise ModelMissing(f"{what} at {model_path} (with {side.name}); train one with `python -m matmul {cmd}`")
    stat = model_path.stat()
    loaded = _load(str(model_path), str(side), stat.st_mtime_ns, stat.st_size, side.stat().st_mtime_ns)
    want = CROSS if cross else facts.profile
    if loaded.meta.get("profile") != want:
        raise ModelError(f"model {model_path} was trained as {loaded.meta.get('profile')!r}, not {want!r} "
                         "(moved from another folder?); retrain with `python -m matmul ml train"
                         f"{' --cross' if cross else ''}`")
    return loaded


def _check_model_text(text: str) -> None:
    """Refuse model text LightGBM would read past the end of.

    LightGBM slices the trees by the byte sizes in ``tree_sizes=`` and aborts
    the process (not an exception) on a truncated model, so the layout is
    checked first: the trees fill exactly the declared bytes, and the file
    ends with the parameter block.
    """
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
    margin, per_shape = meta.get("margin", MARGIN), meta.get("configs_per_shape", CONFIGS_DEFAULT)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ModelError(f"model sidecar {side} has margin {margin!r}, not a non-negative number; retrain with "
                         "`python -m matmul ml train`")
    if not check_domain(meta.get("domain")):
        raise ModelError(f"model sidecar {side} has no valid trained domain (M, K, N ranges, layouts, dtypes); "
                         "retrain with `python -m matmul ml train`")
    if isinstance(per_shape, bool) or not isinstance(per_shape, int) or per_shape < 1:
        raise ModelError(f"model sidecar {side} has configs_per_shape {per_shape!r}, not a positive integer; "
                         "retrain with `python -m matmul ml train`")
    trained = meta.get("trained_profiles", [])
    if not isinstance(trained, list) or not all(isinstance(p, str) for p in trained):
        raise ModelError(f"model sidecar {side} has trained_profiles {trained!r}, not a list of profile names; "
                         "retrain with `python -m matmul ml train`")
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


#: The candidate set the model scores (a test may swap in another).
candidate_set: Callable[..., list[RuleConfig]] = candidate_configs


def predict(shape: MatmulShape, facts: HostFacts | None = None, *, dtype: str = "float32", layout: str = "NN",
            root: str | Path | None = None, slices: int = 1, b_constant: bool = False) -> Prediction:
    """The model's config for a shape, or the rules' with the reason it fell back.

    ``slices`` > 1 (a batched block, attention's heads) lies outside what the model was trained on
    (single matmuls): it keeps the rules' config, decided for the slices, and says so.

    ``b_constant``: B is a weight packed once (a model's layer). The model scores configs for B packed per call
    (its records are); where it keeps the rules' config, falls back or declines, the config is the one the rules
    give for B packed once (R4's TK from L2 on half-rate FMAs), as ``rule_based_prepacked`` builds it.

    Candidates with fewer parallel tasks than the threads the rules' config keeps busy are never picked: the
    model learns the split between threads from few records (R12's whole-row GEMVs: TN = N with K split),
    and read TN = N without the split, one thread working, as a gain (0.67x measured at t5-small's QKV, M = 1).
    """
    facts = facts or host_facts()
    rule = decide(shape, facts, dtype=dtype, layout=layout, slices=slices).config
    kept = decide(shape, facts, dtype=dtype, layout=layout, slices=slices, b_constant=True).config \
        if b_constant else rule  # what keeping the rules' config builds
    info: dict[str, Any] = {"profile": facts.profile, "threads": facts.runtime_threads, "search_trials": 0}
    try:
        model = _model_for(facts, root)
        info.update(model=str(model.path), model_sha256=model.meta.get("model_sha256"),
                    model_scope="cross" if model.meta.get("profile") == CROSS else "profile",
                    trained_profiles=list(model.meta.get("trained_profiles", [model.meta.get("profile")])))
        away = (f"a batched block of {slices} slices; the model knows single matmuls" if slices > 1 else
                outside(model.meta["domain"], shape, dtype, layout))
        if away:  # no fallback: the model declines to extrapolate, and says why
            info.update(domain=f"outside: {away}", rules_config=True)
            return Prediction(kept, None, {"source": "model", "fallback": None, **kept.as_dict(), **info})
        configs = candidate_set(shape, facts, dtype=dtype, layout=layout,
                              limit=int(model.meta.get("configs_per_shape", CONFIGS_DEFAULT)))
        feats = feature_rows(shape, configs, facts, dtype=dtype, layout=layout)
        scores = model.booster.predict(feats.astype(float))
        idle = leaves_threads_idle([c.tasks(shape) for c in configs], rule.tasks(shape), facts.runtime_threads)
        scores = np.where(idle, -np.inf, scores)
        best = pick(scores, feats["is_rule"].to_numpy(), float(model.meta.get("margin", MARGIN)))
        cfg, changed = clamp(configs[best], shape, facts, dtype)
        if config_key(cfg) == config_key(rule):
            cfg = kept
        rule_idx = np.flatnonzero(feats["is_rule"].to_numpy())
        gain = float(scores[best] - scores[rule_idx[0]]) if len(rule_idx) else None
        info.update(domain="inside", candidates=len(configs), idle_threads_excluded=int(idle.sum()),
                    margin=float(model.meta.get("margin", MARGIN)),
                    predicted_speedup=math.exp(float(scores[best])), predicted_gain_over_rules=gain,
                    clamped=changed, rules_config=config_key(cfg) in (config_key(rule), config_key(kept)))
        return Prediction(cfg, None, {"source": "model", "fallback": None, **cfg.as_dict(), **info})
    except (ModelError, RuleError) as err:
        reason = str(err)
    log.warning("ml_guided falls back to rule_based for %s (%s, %s): %s", shape, dtype, layout, reason)
    return Prediction(kept, reason, {"source": "rule_based", "fallback": reason, **kept.as_dict(), **info})


def _model_for(facts: HostFacts, root: str | Path | None) -> LoadedModel:
    """The profile's own model; when it has none (not when it is broken), the cross-profile model."""
    try:
        return load_model(facts, root)
    except ModelMissing as own:
        try:
            return load_model(facts, root, cross=True)
        except ModelMissing as other:
            raise ModelMissing(f"{own}; and {other}") from None


def leaves_threads_idle(tasks, rule_tasks: int, threads: int) -> np.ndarray:
    """Which configs (by parallel task count) have fewer tasks than the threads the rules' config keeps busy:
    :func:`predict` never picks them."""
    return np.asarray(tasks) < min(int(threads), int(rule_tasks))


def pick(scores: np.ndarray, is_rule: np.ndarray, margin: float = MARGIN) -> int:
    """Index of the best-scored config, or of the rules' config unless the best beats it by ``margin``."""
    best = int(np.argmax(scores))
    rule = np.flatnonzero(is_rule)
    if len(rule) and scores[best] - scores[rule[0]] < margin:
        return int(rule[0])
    return best


__all__ = [
    "CROSS",
    "MARGIN",
    "MODEL_NAME",
    "MODEL_ROOT_ENV",
    "PARAMS",
    "ROUNDS",
    "LoadedModel",
    "ModelError",
    "ModelMissing",
    "Prediction",
    "clamp",
    "fit",
    "leaves_threads_idle",
    "load_model",
    "model_dir",
    "model_paths",
    "pick",
    "predict",
    "train",
    "training_frame",
]
