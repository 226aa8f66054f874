"""Held-out evaluation of the learned model (leave out one shape or one profile), from the sweep's records."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ...core.hardware import HostFacts
from ...core.workloads import KERNELS, MatmulShape, kernel_shape
from ..rules import RuleConfig, decide
from ..template import config_from_dict
from .domain import domain_of, outside, self_pair_noise
from .features import FEATURES, TARGET_KNOBS
from .model import MARGIN, ROUNDS, fit, leaves_threads_idle, pick, training_frame


def _held_out_row(key: str, held: pd.DataFrame, scores, train: pd.DataFrame) -> dict:
    """One held-out workload's pick among its measured configs, against the rules' and the measured best.

    The pick follows :func:`~matmul.schedules.ml.model.predict`: the margin is the larger of :data:`MARGIN` and
    the training rows' own noise, and a shape outside the training rows' domain keeps the rules' config.
    """
    first = held.iloc[0]
    shape = MatmulShape(int(first["M"]), int(first["K"]), int(first["N"]))
    away = outside(domain_of(train), shape, "float64" if first["dtype_bytes"] == 8 else "float32",
                   "NT" if first["layout_nt"] else "NN")
    is_rule = held["is_rule"].to_numpy()
    if is_rule.any():  # as predict: never a config that leaves threads idle where the rules' keeps them busy
        scores = np.where(leaves_threads_idle(held["tasks"], held["tasks"].iloc[int(np.flatnonzero(is_rule)[0])],
                                              first["threads"]), -np.inf, scores)
    if away and is_rule.any():
        chosen = held.iloc[int(np.flatnonzero(is_rule)[0])]
    else:
        chosen = held.iloc[pick(scores, is_rule, max(MARGIN, self_pair_noise(train)))]
    best = held.iloc[int(held["rel"].idxmax())]
    rule = held[held["is_rule"] == 1]
    row = {"workload": key, "M": int(held["M"][0]), "K": int(held["K"][0]), "N": int(held["N"][0]),
           "configs": len(held), "picked_rules_config": bool(chosen["is_rule"]),
           "sweep_speedup": 1.0 if chosen["is_rule"] else float(chosen["speedup_vs_rule"]),
           "rel_pick": float(chosen["rel"]),
           "rel_rule": float(rule["rel"].iloc[0]) if len(rule) else float("nan"),
           "domain": f"outside: {away}" if away else "inside"}
    for k in TARGET_KNOBS:
        row[f"pick_{k}"], row[f"best_{k}"] = chosen[k], best[k]
        row[f"rule_{k}"] = rule[k].iloc[0] if len(rule) else None
    return row


def _say(progress, n: int, total: int, row: dict) -> None:
    if progress:
        what = "the rules' config" if row["picked_rules_config"] else f"{row['sweep_speedup']:.3f}x the rules' config"
        progress(f"[{n}/{total}] {row['workload']}: picked {what}")


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
        rest = t[t["workload"] != key]
        booster = fit(rest, rounds=rounds)
        rows.append(_held_out_row(key, held, booster.predict(held[list(FEATURES)].astype(float)), rest))
        _say(progress, n, len(keys), rows[-1])
    return pd.DataFrame(rows)


def leave_profile_out(df: pd.DataFrame, profile: str, *, rounds: int = ROUNDS,
                      progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Leave-profile-out: train on every other profile's records, then pick for each workload of ``profile``.

    ``df`` holds several profiles' template rows (:func:`~matmul.schedules.ml.data.cross_dataset`); the rows
    are as :func:`leave_one_out`'s, with ``trained_profiles`` naming what the model saw.
    """
    t = training_frame(df)
    if "profile" not in t or profile not in set(t["profile"]):
        have = sorted(set(t["profile"])) if "profile" in t else []
        raise ValueError(f"no template records of profile {profile} to hold out; profiles: {', '.join(have)}")
    if not (t["profile"] != profile).any():
        raise ValueError(f"leave-profile-out needs records of a profile other than {profile} to train on; sweep "
                         "on another CPU and copy its tuning_db/<profile>/ folder here")
    return _train_and_pick(t, t["profile"] == profile, rounds, progress)


def model_pairs(model: str) -> set[tuple[int, int]]:
    """The (K, N) of a model's three kernels: what identifies its shapes whatever M."""
    return {(s.K, s.N) for s in (kernel_shape(k, 1, model) for k in KERNELS)}


def leave_model_out(df: pd.DataFrame, model: str, *, rounds: int = ROUNDS,
                    progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Leave-one-model-out: train without any shape of ``model`` (its three kernels' K and N, every M), pick
    for each of them. Models that share a layer size (bert-base and distilbert) leave each other out too."""
    t = training_frame(df)
    pairs = model_pairs(model)
    held = pd.Series([(k, n) in pairs for k, n in zip(t["K"], t["N"])], index=t.index)
    if not held.any():
        raise ValueError(f"no template records of {model}'s shapes (K, N in {sorted(pairs)}) to hold out; sweep "
                         f"them with `python -m matmul ml sweep --model {model} --m-values ...`")
    if held.all():
        raise ValueError(f"every record is of {model}'s shapes: nothing left to train on")
    return _train_and_pick(t, held, rounds, progress)


def _train_and_pick(t: pd.DataFrame, held: pd.Series, rounds: int, progress) -> pd.DataFrame:
    """One model on the rows not ``held``, a pick for each held workload (rows name what trained it)."""
    train_rows, test = t[~held], t[held]
    booster = fit(train_rows, rounds=rounds)
    keys = sorted(test["workload"].unique())
    rows = []
    trained = ",".join(sorted(set(train_rows["profile"]))) if "profile" in train_rows else ""
    for n, key in enumerate(keys, 1):
        part = test[test["workload"] == key].reset_index(drop=True)
        rows.append({**_held_out_row(key, part, booster.predict(part[list(FEATURES)].astype(float)), train_rows),
                     "trained_profiles": trained, "trained_workloads": train_rows["workload"].nunique()})
        _say(progress, n, len(keys), rows[-1])
    return pd.DataFrame(rows)


def knob_accuracy(loo: pd.DataFrame) -> pd.DataFrame:
    """Per knob: how often the held-out pick (and the rules' config) equals the measured best."""
    out = []
    for k in TARGET_KNOBS:
        out.append({"knob": k, "model_accuracy": float((loo[f"pick_{k}"] == loo[f"best_{k}"]).mean()),
                    "rules_accuracy": float((loo[f"rule_{k}"] == loo[f"best_{k}"]).mean())})
    return pd.DataFrame(out)


def config_of(row: pd.Series, prefix: str, shape: MatmulShape, facts: HostFacts, dtype: str) -> RuleConfig:
    base = decide(shape, facts, dtype=dtype).config
    d = base.as_dict()
    for k in TARGET_KNOBS:
        v = row[f"{prefix}_{k}"]
        d[k] = v if k == "order" else bool(v) if k == "pack_b" else int(v)
    return config_from_dict(d)


__all__ = ["config_of", "knob_accuracy", "leave_model_out", "leave_one_out", "leave_profile_out", "model_pairs"]
