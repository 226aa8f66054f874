"""``ml_guided``: a LightGBM model picks the rule template's config for a shape, with no search.

* :mod:`.features`: shape, hardware and config features, and the target;
* :mod:`.data`: every tuning record of a profile as one table;
* :mod:`.model`: deterministic training, checked loading, prediction with fallback;
* :mod:`.evaluate`: leave-one-shape-out from the sweep's measurements.

Importing this package registers ``ml_guided``. When the model is missing,
broken or predicts an illegal config, the variant uses the rules' config and
its decisions say why (``fallback``, also saved in a benchmark's ``extra_info``).
"""

from __future__ import annotations

from tvm.s_tir import Schedule

from ...core.registry import ScheduleContext, Variant, register
from ..rules import apply_config, panel_relayout, prefetch_blocker, prepacks
from . import data, domain, evaluate, features, model
from .data import (
    SCHEMA,
    cross_dataset,
    data_hash,
    dataset,
    profile_facts,
    read_dataset,
    rebased,
    write_dataset,
)
from .domain import domain_of, outside, self_pair_noise
from .evaluate import (
    knob_accuracy,
    leave_model_out,
    leave_one_out,
    leave_profile_out,
    model_pairs,
)
from .features import FEATURES, TARGET_CLIP, TARGET_KNOBS, feature_rows, target
from .model import (
    CROSS,
    MARGIN,
    MODEL_NAME,
    MODEL_ROOT_ENV,
    PARAMS,
    LoadedModel,
    ModelError,
    ModelMissing,
    Prediction,
    clamp,
    fit,
    leaves_threads_idle,
    load_model,
    model_dir,
    model_paths,
    pick,
    predict,
    train,
    training_frame,
)

#: The registry name of the family's variant.
NAME = MODEL_NAME


def _prediction(ctx: ScheduleContext) -> Prediction:
    return predict(ctx.shape, ctx.facts, dtype=ctx.dtype, layout=ctx.layout, slices=ctx.slices,
                   b_constant=ctx.b_constant)


def _prefetch(config, ctx: ScheduleContext) -> bool:
    """R14 for the predicted config, as the rules decide it for theirs."""
    return not prefetch_blocker(config, ctx.shape, ctx.layout, ctx.dtype, ctx.slices > 1, ctx.facts)


def _apply(sch: Schedule, ctx: ScheduleContext) -> None:
    config = _prediction(ctx).config
    apply_config(sch, config, ctx.shape, ctx.layout, ctx.block, prepack_b=ctx.b_constant,
                 prefetch=_prefetch(config, ctx))


def _decisions(ctx: ScheduleContext) -> dict:
    pred = _prediction(ctx)
    d = {**pred.decisions, "prefetch_b": _prefetch(pred.config, ctx)}
    if not ctx.b_constant:
        return d
    return {**d, "b_prepacked": prepacks(pred.config, ctx.shape, batched=ctx.slices > 1)}


register(Variant(
    NAME, "learned", _apply,
    lambda facts: (f"the rule template with the config a LightGBM regressor picks for the shape (the "
                   f"{facts.profile} model, else the one trained on every profile's records); no search; the "
                   "rules' config when the model is missing, broken or illegal"),
    decisions=_decisions,
    info_keys=("fallback", "model_scope", "trained_profiles", "domain"),
    relayout_b=panel_relayout(lambda ctx: _prediction(ctx).config),
))

__all__ = [
    "CROSS",
    "FEATURES",
    "MARGIN",
    "MODEL_NAME",
    "MODEL_ROOT_ENV",
    "PARAMS",
    "SCHEMA",
    "TARGET_CLIP",
    "TARGET_KNOBS",
    "LoadedModel",
    "ModelError",
    "ModelMissing",
    "Prediction",
    "clamp",
    "cross_dataset",
    "data",
    "data_hash",
    "dataset",
    "domain",
    "domain_of",
    "evaluate",
    "feature_rows",
    "features",
    "fit",
    "knob_accuracy",
    "leave_model_out",
    "leave_one_out",
    "leave_profile_out",
    "leaves_threads_idle",
    "load_model",
    "model",
    "model_dir",
    "model_pairs",
    "model_paths",
    "outside",
    "pick",
    "predict",
    "profile_facts",
    "read_dataset",
    "rebased",
    "self_pair_noise",
    "target",
    "train",
    "training_frame",
    "write_dataset",
]
