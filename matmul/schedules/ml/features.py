"""The learned model's inputs: shape, hardware and config features, and its target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...core.hardware import HostFacts
from ...core.kernel import check_layout
from ...core.workloads import MatmulShape
from ..rules import RuleConfig, decide
from ..rules.config import itemsize, l1_bytes, l2_bytes, vector_registers
from ..template import config_key

#: Targets are clipped to this (log) range: a config 2x slower than the rules'
#: teaches no more than one that is "only" 2x slower.
TARGET_CLIP = 0.7

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



def shape_features(shape: MatmulShape, facts: HostFacts, dtype: str = "float32", layout: str = "NN") -> dict:
    return {
        "M": shape.M, "K": shape.K, "N": shape.N,
        "log2_M": math.log2(shape.M), "log2_MN": math.log2(shape.M * shape.N), "k_over_n": shape.K / shape.N,
        "m_mod_8": shape.M % 8, "m_mod_16": shape.M % 16, "n_mod_96": shape.N % 96,
        "layout_nt": int(check_layout(layout) == "NT"), "dtype_bytes": itemsize(dtype),
        "lanes": facts.simd_lanes_fp32, "vregs": vector_registers(facts),
        "l1_kib": l1_bytes(facts) / 1024, "l2_kib": l2_bytes(facts) / 1024,
        "threads": facts.runtime_threads,
    }


def config_features(shape: MatmulShape, cfg: RuleConfig, rule: RuleConfig, facts: HostFacts,
                    dtype: str = "float32") -> dict:
    size = itemsize(dtype)
    mp, np_, kp = cfg.padded(shape)
    tasks = cfg.tasks(shape)
    l1, l2 = l1_bytes(facts), l2_bytes(facts)
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




__all__ = ["CONFIG_FEATURES", "FEATURES", "HW_FEATURES", "RELATIVE_FEATURES", "SHAPE_FEATURES", "TARGET_CLIP",
           "TARGET_KNOBS", "config_features", "feature_rows", "shape_features", "target"]
