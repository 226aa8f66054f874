"""``python -m matmul``: inspect the host, the variants and the generated code;
report on saved benchmark runs; compare two variants side by side."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tvm.s_tir import ScheduleError

from . import hardware
from .kernel import DTYPES, LAYOUTS
from .runner import SOURCE_KINDS, build, count_vector_fma
from .variants import get_variant, variant_names
from .verify import DATA_KINDS, VerificationError, verify
from .workloads import KERNELS, MODELS, MatmulShape, kernel_shape, workloads


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="full", help="a registered variant (see `variants`)")
    p.add_argument("--kernel", default="qkv", help=f"one of {', '.join(KERNELS)}")
    p.add_argument("-M", type=_positive, default=128, help="rows (default 128)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=_positive, nargs=3, metavar=("M", "K", "N"),
                   help="explicit M K N instead of --kernel/-M/--model")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    p.add_argument("--dtype", choices=DTYPES, default="float32")


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    """The workload grid of `tune` and `compare-db` (read back by :func:`_tune_targets`)."""
    p.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    p.add_argument("--m-values", type=_positive, nargs="+", help="M values (default: the seed sweep)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=_positive, nargs=3, metavar=("M", "K", "N"), help="one explicit M K N instead")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    p.add_argument("--dtype", choices=DTYPES, default="float32")


def _shape(args: argparse.Namespace) -> MatmulShape:
    if args.shape:
        return MatmulShape(*args.shape)
    return kernel_shape(args.kernel, args.M, args.model)


def _cmd_info(args: argparse.Namespace) -> int:
    facts = hardware.host_facts()
    if args.json:
        print(json.dumps(facts.as_dict(), indent=2))
    else:
        for key, value in facts.as_dict().items():
            print(f"{key:18} {value}")
    return 0


def _cmd_variants(args: argparse.Namespace) -> int:
    facts = hardware.host_facts()
    for name in variant_names():
        v = get_variant(name)
        status = "legal" if v.legal else f"ILLEGAL ({v.illegal_because})"
        print(f"{name:16} {v.family:8} {status:10} {v.summary(facts)}")
    from .references import REFERENCES

    for ref in REFERENCES.values():
        reason = ref.unavailable()
        print(f"{ref.name:16} {'vendor':8} {'available' if not reason else 'MISSING':10} {ref.summary}"
              + (f" ({reason})" if reason else ""))
    return 0


def _cmd_peak(args: argparse.Namespace) -> int:
    from .peak import computed_fp32_peak, measure_fp32_peak

    for peak in (measure_fp32_peak(), computed_fp32_peak()):
        if peak is not None:
            print(f"{peak.method:9} {peak.gflops:8.1f} GFLOP/s  {peak.detail}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report, plot_report, to_text, write_report

    report = build_report(args.runs, storage=args.storage, base=args.base, threshold=args.threshold,
                          cv_threshold=args.cv_threshold)
    print(to_text(report))
    if args.out:
        files = write_report(report, args.out)
        if args.plots:
            try:
                files += plot_report(report, args.out)
            except ImportError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        print(f"\nwrote {len(files)} files to {args.out}/")
    elif args.plots:
        print("error: --plots needs --out DIR", file=sys.stderr)
        return 2
    return 1 if len(report.regressions) else 0


def _cmd_agreement(args: argparse.Namespace) -> int:
    from .agreement import numpy_agreement
    from .report import to_markdown

    loads = list(workloads(args.kernels, args.m_values, args.model))
    table, summary = numpy_agreement(loads, layout=args.layout, alternations=args.alternations,
                                     progress=lambda line: print(line, file=sys.stderr))
    print(to_markdown(table))
    print()
    print(to_markdown(summary))
    return 0


def _cmd_paired(args: argparse.Namespace) -> int:
    from .paired import paired, paired_table
    from .report import to_markdown

    loads = list(workloads(args.kernels, args.m_values, args.model))
    results = paired(args.a, args.b, loads, layout=args.layout, blocks=args.blocks, calls=args.calls,
                     progress=lambda line: print(line, file=sys.stderr))
    table, geo = paired_table(results)
    print(to_markdown(table))
    print()
    print(to_markdown(geo))
    if args.csv:
        from .report import atomic_write

        atomic_write(args.csv, table.to_csv(index=False))
        atomic_write(args.csv.with_name(args.csv.stem + "-geomean.csv"), geo.to_csv(index=False))
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    from .rules import RULES, decide, parse_overrides

    overrides = parse_overrides(f"rule_based[{args.set}]")[1] if args.set else None
    plan = decide(_shape(args), hardware.host_facts(), dtype=args.dtype, layout=args.layout, overrides=overrides)
    print(plan.table())
    if args.rules:
        print()
        for rid, text in RULES.items():
            print(f"  {rid:<4} {text}")
    return 0


def _cmd_evidence(args: argparse.Namespace) -> int:
    from .evidence import get_study, overall, run_study, study_names, write_study

    names = args.studies or study_names()
    studies = [get_study(n) for n in names]  # every name checked before anything runs
    for study in studies:
        print(f"== {study.name}: {study.question}", file=sys.stderr)
        result = run_study(study, kernels=args.kernels, m_values=args.m_values, blocks=args.blocks,
                           calls=args.calls, progress=lambda line: print("   " + line, file=sys.stderr))
        files = write_study(result, args.out)
        for (a, b), ratio in overall(result).items():
            print(f"{study.name:<10} {b:<32} speedup over {a}: {ratio:.3f}")
        print(f"   wrote {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 0


def _cmd_shapes(args: argparse.Namespace) -> int:
    for w in workloads(args.kernels, args.m_values, args.model):
        s = w.shape
        print(f"{w.id:28} M={s.M:<6} K={s.K:<6} N={s.N:<6} {s.flops / 1e9:8.3f} GFLOP")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    kernel = build(args.variant, _shape(args), dtype=args.dtype, layout=args.layout)
    print(f"{args.variant} {kernel.shape} {args.dtype} {args.layout}: {verify(kernel, seed=args.seed, kind=args.data)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    kernel = build(args.variant, _shape(args), dtype=args.dtype, layout=args.layout)
    text = kernel.source(args.format)
    if args.format == "asm":
        n = count_vector_fma(text, kernel.facts)
        logging.getLogger(__name__).info("%d packed fp32 FMA instructions at %d lanes", n, kernel.facts.simd_lanes_fp32)
    print(text)
    return 0


def _tracker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9190)")
    return host, int(port)


def _tune_targets(args: argparse.Namespace) -> list[tuple[str, MatmulShape]]:
    if args.shape:
        s = MatmulShape(*args.shape)
        return [(f"M{s.M}xK{s.K}xN{s.N}", s)]
    return [(w.id, w.shape) for w in workloads(args.kernels, args.m_values, args.model)]


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import RPCSettings, SearchSettings, profile_dir, prune, tune_workloads

    facts = hardware.facts_for(args.target) if args.target else hardware.host_facts()
    rpc = None
    if args.rpc_tracker or args.rpc_key:
        if not (args.rpc_tracker and args.rpc_key):
            print("error: --rpc-tracker and --rpc-key go together", file=sys.stderr)
            return 2
        rpc = RPCSettings(*args.rpc_tracker, args.rpc_key)
    if not args.verbose:  # our own progress lines replace MetaSchedule's task tables
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    targets = _tune_targets(args)
    pdir = profile_dir(facts, args.root)
    where = f"on the RPC key {args.rpc_key!r} via {args.rpc_tracker[0]}:{args.rpc_tracker[1]}" if rpc else "locally"
    print(f"tuning {len(targets)} workloads to {args.trials} trials each into {pdir}, measuring {where}",
          file=sys.stderr)
    outcomes = tune_workloads(targets, trials=args.trials, dtype=args.dtype, layout=args.layout, facts=facts,
                              root=args.root,
                              search=SearchSettings(args.per_iter, args.population, args.seed, rpc),
                              emit=lambda line: print(line, file=sys.stderr, flush=True))
    for (label, shape), out in zip(targets, outcomes):
        best = "-" if out.best_gflops is None else f"{out.best_gflops:.1f}"
        print(f"{label:28} trials {out.trials_before:>4} -> {out.trials_now:<4} {out.seconds:7.0f} s  "
              f"best {best} GFLOP/s{'  (already tuned)' if out.skipped else ''}")
    if args.prune:
        for key, (before, after) in prune(pdir, args.prune).items():
            print(f"pruned {key}: {before} -> {after} records")
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    from .report import atomic_write, to_markdown
    from .traces import summary_counts, traces_table
    from .tuning import profile_dir

    facts = hardware.host_facts()
    table = traces_table(facts=facts, root=args.root, top=args.top)
    if table.empty:
        print(f"error: no tuned workloads in {profile_dir(facts, args.root)}; run `python -m matmul tune` first",
              file=sys.stderr)
        return 2
    counts = summary_counts(table)
    shown = table.drop(columns=["model", "K", "N", "dtype", "tiling"], errors="ignore")
    for col in ("cache_write", "decompose_reduction"):
        shown[col] = shown[col].map({True: "yes", False: "no"})
    print(to_markdown(shown.round(1)))
    print()
    print(to_markdown(counts))
    out = args.csv or Path(f"traces-{facts.profile}.csv")
    atomic_write(out, table.to_csv(index=False))
    atomic_write(out.with_name(out.stem + "-counts.csv"), counts.to_csv(index=False))
    print(f"\nwrote {out} and {out.with_name(out.stem + '-counts.csv')}", file=sys.stderr)
    return 0


def _cmd_compare_db(args: argparse.Namespace) -> int:
    from .paired import compare_databases
    from .report import atomic_write, to_markdown
    from .tuning import default_root, has_record, profile_dir

    facts = hardware.host_facts()
    new_root = args.root or default_root()
    targets = []
    for label, shape in _tune_targets(args):
        lacking = [str(profile_dir(facts, r)) for r in (args.base, new_root)
                   if not has_record(shape, dtype=args.dtype, layout=args.layout, facts=facts, root=r)]
        if lacking:
            print(f"skipped {label}: no record in {' or '.join(lacking)}", file=sys.stderr)
        else:
            targets.append((label, shape))
    if not targets:
        print(f"error: no shape has a record in both {profile_dir(facts, args.base)} and {profile_dir(facts, new_root)}; "
              "tune them with `python -m matmul tune --root ...`", file=sys.stderr)
        return 2
    table, geo = compare_databases(args.base, new_root, targets, layout=args.layout, dtype=args.dtype,
                                   beside=args.beside, blocks=args.blocks, calls=args.calls,
                                   progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(to_markdown(table.round(3)))
    print()
    print(to_markdown(geo.round(3)))
    if args.csv:
        atomic_write(args.csv, table.to_csv(index=False))
        atomic_write(args.csv.with_name(args.csv.stem + "-geomean.csv"), geo.to_csv(index=False))
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from .tuning import profile_dir, prune

    pdir = args.dir or profile_dir(hardware.host_facts(), args.root)
    for key, (before, after) in prune(pdir, args.keep).items():
        print(f"{key:32} {before:>5} -> {after} records")
    return 0


def _ml_sweep(args: argparse.Namespace) -> int:
    from .template import sweep, template_dir

    facts = hardware.host_facts()
    loads = list(workloads(args.kernels, args.m_values, args.model))
    print(f"sweeping {args.configs} rule-template configs of {len(loads)} workloads into "
          f"{template_dir(facts, args.root)}", file=sys.stderr)
    sweep(loads, dtype=args.dtype, layout=args.layout, configs=args.configs, calls=args.calls, facts=facts,
          root=args.root, progress=lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def _ml_dataset(args: argparse.Namespace) -> int:
    from .ml import dataset, write_dataset

    facts = hardware.host_facts()
    df = dataset(facts=facts, root=args.root, sources=args.sources)
    out = args.out or Path(f"ml-dataset-{facts.profile}.csv")
    written = write_dataset(df, out, facts=facts, root=args.root)
    counts = ", ".join(f"{n} {s}" for s, n in df["source"].value_counts().sort_index().items())
    print(f"{len(df)} records ({counts}) of {df['workload'].nunique()} workloads; wrote "
          f"{' and '.join(map(str, written))}")
    return 0


def _ml_frame(args: argparse.Namespace):
    from .ml import dataset, read_dataset

    if args.dataset:
        return read_dataset(args.dataset)
    return dataset(facts=hardware.host_facts(), root=args.root, sources=["template"])


def _ml_train(args: argparse.Namespace) -> int:
    from .ml import train

    written, meta = train(_ml_frame(args), facts=hardware.host_facts(), root=args.model_root)
    print(f"trained on {meta['rows']} configs of {len(meta['workloads'])} workloads "
          f"(data sha256 {meta['data_sha256'][:12]}); wrote {' and '.join(map(str, written))}")
    return 0


def _ml_evaluate(args: argparse.Namespace) -> int:
    from .ml import knob_accuracy, leave_one_out, measure_held_out
    from .report import atomic_write, geomean, to_markdown
    from .traces import _kernel_name

    facts = hardware.host_facts()
    say = (lambda line: print(line, file=sys.stderr, flush=True))
    loo = leave_one_out(_ml_frame(args), progress=say)
    acc = knob_accuracy(loo)
    lines = ["# ml_guided: leave-one-shape-out evaluation", "",
             f"Profile {facts.profile}; {len(loo)} workloads, each predicted by a model trained without it.", "",
             "## Per-knob accuracy (held-out pick == the sweep's best config)", "", to_markdown(acc.round(3)), "",
             f"The model kept the rules' config on {int(loo['picked_rules_config'].sum())} of {len(loo)} held-out "
             f"shapes. The picks' speedup over the rules' config as the sweep measured it (1 for the rules' "
             f"own), geometric mean: {geomean(loo['sweep_speedup']):.3f}. Against each shape's best measurement: "
             f"the pick {geomean(loo['rel_pick']):.3f}, the rules' config {geomean(loo['rel_rule']):.3f} (the best "
             f"of 28 noisy measurements is biased high)."]
    out = args.out or Path("evidence") / facts.profile / "ml"
    tables = {"loo.csv": loo, "accuracy.csv": acc}
    if not args.no_measure:
        meas = measure_held_out(loo, facts=facts, blocks=args.blocks, calls=args.calls, progress=say)
        meas.insert(0, "kernel", [_kernel_name(MatmulShape(m, k, n))[1] for m, k, n in
                                  zip(meas["M"], meas["K"], meas["N"])])
        per = meas.groupby("kernel", sort=False).agg(
            shapes=("workload", "size"), ml_vs_rule=("ml_vs_rule", geomean),
            ml_vs_metaschedule=("ml_vs_metaschedule", geomean)).reset_index()
        per.loc[len(per)] = ["all", len(meas), geomean(meas["ml_vs_rule"]), geomean(meas["ml_vs_metaschedule"])]
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
    print(f"wrote {', '.join(tables)} and EVALUATION.md to {out}", file=sys.stderr)
    return 0


def _ml_predict(args: argparse.Namespace) -> int:
    from .ml import predict

    pred = predict(_shape(args), hardware.host_facts(), dtype=args.dtype, layout=args.layout)
    print(json.dumps(pred.decisions, indent=1, default=str))
    return 0 if pred.fallback is None else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m matmul", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="host hardware facts and the LLVM target")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

    sub.add_parser("variants", help="registered schedule variants and vendor references").set_defaults(
        func=_cmd_variants)

    sub.add_parser("peak", help="measure the FP32 FMA peak (and show the computed one)").set_defaults(
        func=_cmd_peak)

    from .report import CV_THRESHOLD, REGRESSION_THRESHOLD, STORAGE

    rep = sub.add_parser("report", help="tables, comparisons and plots from saved benchmark runs",
                         description="Exit status: 0 ok, 1 a regression beyond --threshold, 2 bad input.")
    rep.add_argument("runs", nargs="*", help="run files, folders or globs (default: every run under --storage)")
    rep.add_argument("--storage", type=Path, default=STORAGE, help="pytest-benchmark storage (default: %(default)s)")
    rep.add_argument("--base", help="run label to compare the others against (default: the oldest)")
    rep.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD,
                     help="latency ratio above 1+threshold is a regression (default: %(default)s)")
    rep.add_argument("--cv-threshold", type=float, default=CV_THRESHOLD,
                     help="flag cases whose CV exceeds this (default: %(default)s)")
    rep.add_argument("--out", type=Path, help="write CSV and Markdown (and PNG with --plots) here")
    rep.add_argument("--plots", action="store_true", help="draw PNG plots (needs the 'plot' extra)")
    rep.set_defaults(func=_cmd_report)

    agr = sub.add_parser("agreement", help="NumPy inside the suite versus NumPy alone, alternated")
    agr.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    agr.add_argument("--m-values", type=_positive, nargs="+", default=[16, 128], help="M values (default: 16 128)")
    agr.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    agr.add_argument("--layout", choices=LAYOUTS, default="NN")
    agr.add_argument("--alternations", type=_positive, default=6, help="suite/alone pairs per shape, even (default: 6)")
    agr.set_defaults(func=_cmd_agreement)

    par = sub.add_parser("paired", help="ABBA side-by-side comparison of two variants on the same shapes")
    par.add_argument("a", help="variant or reference A (e.g. full)")
    par.add_argument("b", help="variant or reference B (e.g. numpy); ratios are B's speedup over A")
    par.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    par.add_argument("--m-values", type=_positive, nargs="+", default=[16, 128], help="M values (default: 16 128)")
    par.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    par.add_argument("--layout", choices=LAYOUTS, default="NN")
    par.add_argument("--blocks", type=_positive, default=4, help="timed blocks per side, even (default: 4)")
    par.add_argument("--calls", type=_positive, default=10, help="calls per block (default: 10)")
    par.add_argument("--csv", type=Path, help="also write the per-shape table (and -geomean.csv) here")
    par.set_defaults(func=_cmd_paired)

    desc = sub.add_parser("describe", help="the rule_based plan for a shape: each decision, its rule, the cache budget")
    _add_kernel_args(desc)
    desc.set_defaults(variant="rule_based")
    desc.add_argument("--set", metavar="KNOB=V,...", help="pin knobs, as in rule_based[tk=64,jpack=16]")
    desc.add_argument("--rules", action="store_true", help="also list every rule")
    desc.set_defaults(func=_cmd_describe)

    evi = sub.add_parser("evidence", help="regenerate the paired (ABBA) measurements behind the rules")
    evi.add_argument("studies", nargs="*", help="studies to run (default: all; see matmul/evidence.py)")
    evi.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    evi.add_argument("--m-values", type=_positive, nargs="+", help="M values (default: each study's own)")
    evi.add_argument("--blocks", type=_positive, default=4, help="timed blocks per side, even (default: 4)")
    evi.add_argument("--calls", type=_positive, help="calls per block (default: each study's own)")
    evi.add_argument("--out", type=Path, default=Path("evidence"), help="output folder (default: %(default)s)")
    evi.set_defaults(func=_cmd_evidence)

    from .tuning import KEEP_DEFAULT, POPULATION, TRIALS_PER_ITER

    tun = sub.add_parser(
        "tune", help="MetaSchedule tuning into this CPU profile's database (resumable)",
        description="Tune each workload up to --trials measured trials. Records go to <root>/<profile>/; a run "
                    "that is killed continues where it stopped when started again; a workload that already has "
                    "the trials is skipped.")
    _add_workload_args(tun)
    tun.add_argument("--trials", type=_positive, default=64, help="measured trials per workload (default: 64)")
    tun.add_argument("--per-iter", type=_positive, default=TRIALS_PER_ITER,
                     help="trials measured (and saved) per search iteration (default: %(default)s)")
    tun.add_argument("--population", type=_positive, default=POPULATION,
                     help="evolutionary search population per generation (default: %(default)s)")
    tun.add_argument("--seed", type=int, help="MetaSchedule's random seed (default: random)")
    tun.add_argument("--root", type=Path, help="folder of per-profile databases (default: $MATMUL_TUNING_ROOT "
                                               "or the shipped tuning_db/)")
    tun.add_argument("--target", help='JSON LLVM target to tune for, e.g. \'{"kind": "llvm", "mcpu": "znver4", '
                                      '"num-cores": 8}\' (default: this host); it picks the profile folder')
    tun.add_argument("--rpc-tracker", type=_tracker, metavar="HOST:PORT",
                     help="measure on a machine registered with this TVM RPC tracker")
    tun.add_argument("--rpc-key", help="the device key the RPC server registered under")
    tun.add_argument("--prune", type=_positive, metavar="K", help="afterwards keep only the K best records per "
                                                                  "workload (see `prune`)")
    tun.set_defaults(func=_cmd_tune)

    cmp = sub.add_parser(
        "compare-db", help="two MetaSchedule databases' best records, timed side by side (with rule_based, numpy)",
        description="Build each shape's best record from the BASE database folder and from --root, verify both, "
                    "and time them in interleaved blocks (A B C, C B A, ...) beside --beside, in one run. "
                    "Ratios: new_over_base above 1 means the --root record is faster.")
    cmp.add_argument("base", type=Path, help="the folder of per-profile databases to compare against (a --root "
                                              "of `tune`, e.g. a copy taken before tuning further)")
    cmp.add_argument("--root", type=Path, help="the new databases (default: $MATMUL_TUNING_ROOT or the shipped "
                                               "tuning_db/)")
    _add_workload_args(cmp)
    cmp.add_argument("--beside", nargs="*", default=["rule_based", "numpy"],
                     help="variants or references timed in the same blocks (default: rule_based numpy)")
    cmp.add_argument("--blocks", type=_positive, default=4, help="timed blocks per candidate, even (default: 4)")
    cmp.add_argument("--calls", type=_positive, default=10, help="least calls per block (default: 10)")
    cmp.add_argument("--csv", type=Path, help="also write the per-shape table (and -geomean.csv) here")
    cmp.set_defaults(func=_cmd_compare_db)

    pru = sub.add_parser("prune", help="keep only the best records per workload in a profile's database")
    pru.add_argument("--keep", type=_positive, default=KEEP_DEFAULT, help="records kept per workload "
                                                                           "(default: %(default)s)")
    pru.add_argument("--root", type=Path, help="folder of per-profile databases (default: the shipped one)")
    pru.add_argument("--dir", type=Path, help="one profile folder (default: this host's profile under --root)")
    pru.set_defaults(func=_cmd_prune)

    tra = sub.add_parser("traces", help="what MetaSchedule chose: the best records' traces as a table, and counts")
    tra.add_argument("--top", type=_positive, default=1, help="records per workload, fastest first (default: 1)")
    tra.add_argument("--root", type=Path, help="folder of per-profile databases (default: the shipped one)")
    tra.add_argument("--csv", type=Path, help="where to save the table (default: traces-<profile>.csv; the "
                                              "counts go beside it as -counts.csv)")
    tra.set_defaults(func=_cmd_traces)

    ml = sub.add_parser("ml", help="the learned variant: sweep the rule template, build the dataset, train, "
                                   "evaluate, predict")
    mls = ml.add_subparsers(dest="ml_command", required=True)
    from .template import CONFIGS_DEFAULT

    swp = mls.add_parser("sweep", help="measure rule-template configs per workload against the rules' config "
                                       "(resumable; records in <root>/<profile>/template/)")
    swp.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    swp.add_argument("--m-values", type=_positive, nargs="+", help="M values (default: the seed sweep)")
    swp.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    swp.add_argument("--layout", choices=LAYOUTS, default="NN")
    swp.add_argument("--dtype", choices=DTYPES, default="float32")
    swp.add_argument("--configs", type=_positive, default=CONFIGS_DEFAULT,
                     help="candidate configs per workload (default: %(default)s)")
    swp.add_argument("--calls", type=_positive, default=10, help="least calls per timed block (default: 10)")
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
    mle = mls.choices["evaluate"]
    mle.add_argument("--no-measure", action="store_true", help="accuracy only; time nothing")
    mle.add_argument("--blocks", type=_positive, default=4, help="timed blocks per variant, even (default: 4)")
    mle.add_argument("--calls", type=_positive, default=10, help="calls per block (default: 10)")
    mle.add_argument("--out", type=Path, help="output folder (default: evidence/<profile>/ml)")

    mlp = mls.add_parser("predict", help="the config ml_guided uses for a shape, or why it falls back "
                                         "(exit 1 on a fallback)")
    _add_kernel_args(mlp)
    mlp.set_defaults(func=_ml_predict)

    shapes = sub.add_parser("shapes", help="Transformer GEMM shapes")
    shapes.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    shapes.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)}")
    shapes.add_argument("--m-values", type=_positive, nargs="+", help="M values (default: the seed sweep)")
    shapes.set_defaults(func=_cmd_shapes)

    ver = sub.add_parser("verify", help="build a variant and check it against NumPy")
    _add_kernel_args(ver)
    ver.add_argument("--seed", type=int, default=0)
    ver.add_argument("--data", choices=DATA_KINDS, default="float")
    ver.set_defaults(func=_cmd_verify)

    show = sub.add_parser("show", help="print the scheduled TIR, LLVM IR or assembly")
    _add_kernel_args(show)
    show.add_argument("--format", choices=SOURCE_KINDS, default="asm")
    show.set_defaults(func=_cmd_show)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ScheduleError as err:
        notes = "; ".join(getattr(err, "__notes__", []))
        last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        print(f"error: schedule is illegal: {last}" + (f" ({notes})" if notes else ""), file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, LookupError, hardware.HardwareError, VerificationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
