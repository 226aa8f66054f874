"""``ml sweep|dataset|train|evaluate|predict``: the learned variant."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.hardware import host_facts
from ..core.kernel import DTYPES, LAYOUTS
from ..core.store import atomic_write
from ..core.tables import geomean, geomeans_by_kernel, to_markdown
from ..core.workloads import KERNELS, MODELS, MatmulShape, identify, workloads
from ..measure.held_out import measure_held_out
from ..measure.sweep import sweep
from ..schedules.ml import (
    cross_dataset,
    dataset,
    knob_accuracy,
    leave_model_out,
    leave_one_out,
    leave_profile_out,
    predict,
    read_dataset,
    train,
    write_dataset,
)
from ..schedules.template import CONFIGS_DEFAULT, template_dir
from .common import add_kernel_args, check_out, positive, say, shape_of


def _ml_sweep(args: argparse.Namespace) -> int:
    facts = host_facts()
    loads = list(workloads(args.kernels, args.m_values, args.model))
    say(f"sweeping {args.configs} rule-template configs of {len(loads)} workloads into "
          f"{template_dir(facts, args.root)}")
    sweep(loads, dtype=args.dtype, layout=args.layout, configs=args.configs, calls=args.calls, facts=facts,
          root=args.root, progress=say)
    return 0


def _ml_dataset(args: argparse.Namespace) -> int:
    facts = host_facts()
    out = args.out or Path(f"ml-dataset-{facts.profile}.csv")
    check_out(out, "--out")
    df = dataset(facts=facts, root=args.root, sources=args.sources)
    written = write_dataset(df, out, facts=facts, root=args.root)
    counts = ", ".join(f"{n} {s}" for s, n in df["source"].value_counts().sort_index().items())
    print(f"{len(df)} records ({counts}) of {df['workload'].nunique()} workloads; wrote "
          f"{' and '.join(map(str, written))}")
    return 0


def _ml_frame(args: argparse.Namespace):

    if args.dataset:
        return read_dataset(args.dataset)
    return dataset(facts=host_facts(), root=args.root, sources=["template"])


def _cross_frame(args: argparse.Namespace, exclude=()):
    df, skipped = cross_dataset(args.root, exclude=exclude)
    for name, why in skipped.items():
        say(f"profile {name} left out: {why}")
    return df


def _ml_train(args: argparse.Namespace) -> int:
    if args.exclude_profile and not args.cross:
        raise ValueError("--exclude-profile applies to the cross-profile model; add --cross")
    if args.dataset and args.cross:
        raise ValueError("--dataset applies to one profile's model; --cross reads every profile's records under "
                         "--root: drop one of the two")
    frame = _cross_frame(args, args.exclude_profile or ()) if args.cross else _ml_frame(args)
    written, meta = train(frame, facts=host_facts(), root=args.model_root, cross=args.cross)
    print(f"trained on {meta['rows']} configs of {len(meta['workloads'])} workloads from "
          f"{', '.join(meta['trained_profiles'])} (data sha256 {meta['data_sha256'][:12]}); "
          f"wrote {' and '.join(map(str, written))}")
    return 0


def _ml_evaluate(args: argparse.Namespace) -> int:
    facts = host_facts()
    held = args.leave_profile_out
    if held and args.leave_model_out:
        raise ValueError("--leave-profile-out and --leave-model-out are two different splits; choose one")
    if held and args.dataset:
        raise ValueError("--leave-profile-out reads every profile's records under --root, not --dataset; "
                         "drop one of the two")
    check_out(args.out, "--out", folder=True)
    if args.leave_model_out:
        loo = leave_model_out(_ml_frame(args), args.leave_model_out, progress=say)
        title = "leave-one-model-out evaluation"
        intro = (f"Profile {facts.profile}; the {len(loo)} workloads of {args.leave_model_out} (every record whose "
                 f"K and N are one of its kernels'), predicted by one model trained on the other "
                 f"{loo['trained_workloads'].iloc[0]} workloads.")
    elif held:
        loo = leave_profile_out(_cross_frame(args), held, progress=say)
        title = "leave-profile-out evaluation"
        intro = (f"Profile {held} held out; {len(loo)} workloads, predicted by one model trained on the records "
                 f"of {loo['trained_profiles'].iloc[0]} only.")
        if held != facts.profile and not args.no_measure:
            say(f"{held} is not this host's profile ({facts.profile}): its picks are not timed here")
            args.no_measure = True
    else:
        loo = leave_one_out(_ml_frame(args), progress=say)
        title = "leave-one-shape-out evaluation"
        intro = f"Profile {facts.profile}; {len(loo)} workloads, each predicted by a model trained without it."
    acc = knob_accuracy(loo)
    lines = [f"# ml_guided: {title}", "", intro, "",
             "## Per-knob accuracy (held-out pick == the sweep's best config)", "", to_markdown(acc.round(3)), "",
             f"The model kept the rules' config on {int(loo['picked_rules_config'].sum())} of {len(loo)} held-out "
             f"shapes ({int((loo['domain'] != 'inside').sum())} of them outside the trained domain, where it "
             f"keeps the rules' config by design). The picks' speedup over the rules' config as the sweep measured "
             f"it (1 for the rules' own), geometric mean: {geomean(loo['sweep_speedup']):.3f}. Against each shape's best measurement: "
             f"the pick {geomean(loo['rel_pick']):.3f}, the rules' config {geomean(loo['rel_rule']):.3f} (the best "
             f"of 28 noisy measurements is biased high)."]
    split = "ml-leave-profile-out" if held else f"ml-leave-out-{args.leave_model_out}" if args.leave_model_out \
        else "ml"
    out = args.out or Path("evidence") / (held or facts.profile) / split
    tables = {"loo.csv": loo, "accuracy.csv": acc}
    if not args.no_measure:
        meas = measure_held_out(loo, facts=facts, blocks=args.blocks, calls=args.calls, progress=say)
        meas.insert(0, "kernel", [identify(MatmulShape(m, k, n))[1] for m, k, n in
                                  zip(meas["M"], meas["K"], meas["N"])])
        per = geomeans_by_kernel(meas, ["ml_vs_rule", "ml_vs_metaschedule"])
        meas.insert(5, "picked_rules_config", loo["picked_rules_config"].to_numpy())
        for kept, label in ((False, "where the model left the rules' config"),
                            (True, "where it kept the rules' config (same code: the noise)")):
            part = meas[meas["picked_rules_config"] == kept]
            per.loc[len(per)] = [label, len(part), geomean(part["ml_vs_rule"]), geomean(part["ml_vs_metaschedule"])]
        tables.update({"measured.csv": meas, "measured-geomean.csv": per})
        lines += ["", "## Measured in this run (interleaved blocks; ratios > 1: ml_guided is faster)", "",
                  to_markdown(per.round(3)), "", to_markdown(meas.drop(columns=["K", "N"]).round(5))]
    text = "\n".join(lines) + "\n"
    print(text)
    for name, df in tables.items():
        atomic_write(out / name, df.to_csv(index=False))
    atomic_write(out / "EVALUATION.md", text)
    say(f"wrote {', '.join(tables)} and EVALUATION.md to {out}")
    return 0


def _ml_predict(args: argparse.Namespace) -> int:
    pred = predict(shape_of(args), host_facts(), dtype=args.dtype, layout=args.layout)
    print(json.dumps(pred.decisions, indent=1, default=str))
    return 0 if pred.fallback is None else 1


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    ml = sub.add_parser("ml", help="the learned variant: sweep the rule template, build the dataset, train, "
                                   "evaluate, predict")
    mls = ml.add_subparsers(dest="ml_command", required=True)

    swp = mls.add_parser("sweep", help="measure rule-template configs per workload against the rules' config "
                                       "(resumable; records in <root>/<profile>/template/)")
    swp.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    swp.add_argument("--m-values", type=positive, nargs="+", help="M values (default: the seed sweep)")
    swp.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    swp.add_argument("--layout", choices=LAYOUTS, default="NN")
    swp.add_argument("--dtype", choices=DTYPES, default="float32")
    swp.add_argument("--configs", type=positive, default=CONFIGS_DEFAULT,
                     help="candidate configs per workload (default: %(default)s)")
    swp.add_argument("--calls", type=positive, default=10, help="least calls per timed block (default: 10)")
    swp.add_argument("--root", type=Path, help="tuning root (default: $MATMUL_TUNING_ROOT or tuning_db/)")
    swp.set_defaults(func=_ml_sweep)

    mld = mls.add_parser("dataset", help="every tuning record (template and MetaSchedule) as one table")
    mld.add_argument("--out", type=Path, help="a .csv or .parquet file (default: ml-dataset-<profile>.csv); "
                                              "<out>.json records where it came from")
    mld.add_argument("--sources", nargs="+", default=["template", "metaschedule"], help="record kinds to include")
    mld.add_argument("--root", type=Path, help="tuning root (default: $MATMUL_TUNING_ROOT or tuning_db/)")
    mld.set_defaults(func=_ml_dataset)

    for name, func, hlp in (("train", _ml_train, "fit the LightGBM model and save it (text + JSON sidecar)"),
                            ("evaluate", _ml_evaluate, "leave-one-shape-out accuracy and measured ratios")):
        cmd = mls.add_parser(name, help=hlp)
        cmd.add_argument("--dataset", type=Path, help="a dataset file (default: built from the tuning root)")
        cmd.add_argument("--root", type=Path, help="tuning root (default: $MATMUL_TUNING_ROOT or tuning_db/)")
        cmd.set_defaults(func=func)
    mlt = mls.choices["train"]
    mlt.add_argument("--model-root", type=Path, help="where models go (default: $MATMUL_MODEL_ROOT or models/)")
    mlt.add_argument("--cross", action="store_true",
                     help="train the cross-profile model on every profile's records under the tuning root "
                          "(saved as <model root>/cross/; ml_guided uses it on a profile without a model)")
    mlt.add_argument("--exclude-profile", nargs="+", metavar="PROFILE", help="with --cross: leave these out")
    mle = mls.choices["evaluate"]
    mle.add_argument("--no-measure", action="store_true", help="accuracy only; time nothing")
    mle.add_argument("--leave-profile-out", metavar="PROFILE",
                     help="train on every other profile's records and evaluate on this one's (timed only when it "
                          "is this host's profile)")
    mle.add_argument("--leave-model-out", metavar="MODEL", choices=list(MODELS),
                     help=f"train without one model's shapes and evaluate on them; one of {', '.join(MODELS)}")
    mle.add_argument("--blocks", type=positive, default=4, help="timed blocks per variant, even (default: 4)")
    mle.add_argument("--calls", type=positive, default=10, help="calls per block (default: 10)")
    mle.add_argument("--out", type=Path, help="output folder (default: evidence/<profile>/ml)")

    mlp = mls.add_parser("predict", help="the config ml_guided uses for a shape, or why it falls back "
                                         "(exit 1 on a fallback)")
    add_kernel_args(mlp)
    mlp.set_defaults(func=_ml_predict)
