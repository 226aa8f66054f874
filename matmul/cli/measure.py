"""``paired``, ``agreement``, ``evidence``, ``compare-db``: measurements side by side in one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.hardware import host_facts
from ..core.kernel import LAYOUTS
from ..core.store import atomic_write, default_root, profile_dir
from ..core.tables import to_markdown
from ..core.workloads import KERNELS, MODELS, MatmulShape, ShapeWorkload, workloads
from ..measure.agreement import numpy_agreement
from ..measure.compare_db import compare_databases
from ..measure.evidence import get_study, overall, run_study, study_names, write_study
from ..measure.paired import paired, paired_table
from ..schedules.metaschedule import has_record
from .common import add_workload_args, check_out, positive, say, workload_targets


def _cmd_agreement(args: argparse.Namespace) -> int:
    loads = list(workloads(args.kernels, args.m_values, args.model))
    table, summary = numpy_agreement(loads, layout=args.layout, alternations=args.alternations,
                                     progress=say)
    print(to_markdown(table))
    print()
    print(to_markdown(summary))
    return 0


def _cmd_paired(args: argparse.Namespace) -> int:
    check_out(args.csv, "--csv")
    loads = ([ShapeWorkload(MatmulShape(*s)) for s in args.shape] if args.shape
             else list(workloads(args.kernels, args.m_values, args.model)))
    results = paired(args.a, args.b, loads, layout=args.layout, blocks=args.blocks, calls=args.calls,
                     progress=say)
    table, geo = paired_table(results)
    print(to_markdown(table))
    print()
    print(to_markdown(geo))
    if args.csv:

        atomic_write(args.csv, table.to_csv(index=False))
        atomic_write(args.csv.with_name(args.csv.stem + "-geomean.csv"), geo.to_csv(index=False))
    return 0


def _cmd_evidence(args: argparse.Namespace) -> int:
    names = args.studies or study_names()
    check_out(args.out, "--out", folder=True)
    studies = [get_study(n) for n in names]  # every name checked before anything runs
    for study in studies:
        say(f"== {study.name}: {study.question}")
        if not study.pairs:
            say(f"   skipped: {study.notes or 'no pair to measure'}")
            continue
        result = run_study(study, kernels=args.kernels, m_values=args.m_values, blocks=args.blocks,
                           calls=args.calls, progress=lambda line: say("   " + line))
        files = write_study(result, args.out)
        for (a, b), ratio in overall(result).items():
            print(f"{study.name:<10} {b:<32} speedup over {a}: {ratio:.3f}")
        say(f"   wrote {', '.join(str(f) for f in files)}")
    return 0


def _cmd_compare_db(args: argparse.Namespace) -> int:
    check_out(args.csv, "--csv")
    facts = host_facts()
    new_root = args.root or default_root()
    targets = []
    for label, shape in workload_targets(args):
        lacking = [str(profile_dir(facts, r)) for r in (args.base, new_root)
                   if not has_record(shape, dtype=args.dtype, layout=args.layout, facts=facts, root=r)]
        if lacking:
            say(f"skipped {label}: no record in {' or '.join(lacking)}")
        else:
            targets.append((label, shape))
    if not targets:
        say(f"error: no shape has a record in both {profile_dir(facts, args.base)} and {profile_dir(facts, new_root)}; "
              "tune them with `python -m matmul tune --root ...`")
        return 2
    table, geo = compare_databases(args.base, new_root, targets, layout=args.layout, dtype=args.dtype,
                                   beside=args.beside, blocks=args.blocks, calls=args.calls,
                                   progress=say)
    print(to_markdown(table.round(3)))
    print()
    print(to_markdown(geo.round(3)))
    if args.csv:
        atomic_write(args.csv, table.to_csv(index=False))
        atomic_write(args.csv.with_name(args.csv.stem + "-geomean.csv"), geo.to_csv(index=False))
    return 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    agr = sub.add_parser("agreement", help="NumPy inside the suite versus NumPy alone, alternated")
    agr.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    agr.add_argument("--m-values", type=positive, nargs="+", default=[16, 128], help="M values (default: 16 128)")
    agr.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    agr.add_argument("--layout", choices=LAYOUTS, default="NN")
    agr.add_argument("--alternations", type=positive, default=6, help="suite/alone pairs per shape, even (default: 6)")
    agr.set_defaults(func=_cmd_agreement)

    par = sub.add_parser("paired", help="ABBA side-by-side comparison of two variants on the same shapes")
    par.add_argument("a", help="variant or reference A (e.g. full)")
    par.add_argument("b", help="variant or reference B (e.g. numpy); ratios are B's speedup over A")
    par.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    par.add_argument("--m-values", type=positive, nargs="+", default=[16, 128], help="M values (default: 16 128)")
    par.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    par.add_argument("--shape", type=positive, nargs=3, action="append", metavar=("M", "K", "N"),
                     help="an explicit M K N instead of the model's kernels (repeat for more shapes)")
    par.add_argument("--layout", choices=LAYOUTS, default="NN")
    par.add_argument("--blocks", type=positive, default=4, help="timed blocks per side, even (default: 4)")
    par.add_argument("--calls", type=positive, default=10, help="calls per block (default: 10)")
    par.add_argument("--csv", type=Path, help="also write the per-shape table (and -geomean.csv) here")
    par.set_defaults(func=_cmd_paired)

    evi = sub.add_parser("evidence", help="regenerate the paired (ABBA) measurements behind the rules")
    evi.add_argument("studies", nargs="*", help="studies to run (default: all; see matmul/evidence.py)")
    evi.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: each study's own: "
                     "all, or those where the rules make the choice its pin undoes)")
    evi.add_argument("--m-values", type=positive, nargs="+", help="M values (default: each study's own)")
    evi.add_argument("--blocks", type=positive, default=4, help="timed blocks per side, even (default: 4)")
    evi.add_argument("--calls", type=positive, help="calls per block (default: each study's own)")
    evi.add_argument("--out", type=Path, default=Path("evidence"), help="output folder (default: %(default)s)")
    evi.set_defaults(func=_cmd_evidence)

    cmp = sub.add_parser(
        "compare-db", help="two MetaSchedule databases' best records, timed side by side (with rule_based, numpy)",
        description="Build each shape's best record from the BASE database folder and from --root, verify both, "
                    "and time them in interleaved blocks (A B C, C B A, ...) beside --beside, in one run. "
                    "Ratios: new_over_base above 1 means the --root record is faster.")
    cmp.add_argument("base", type=Path, help="the folder of per-profile databases to compare against (a --root "
                                              "of `tune`, e.g. a copy taken before tuning further)")
    cmp.add_argument("--root", type=Path, help="the new databases (default: $MATMUL_TUNING_ROOT or the shipped "
                                               "tuning_db/)")
    add_workload_args(cmp)
    cmp.add_argument("--beside", nargs="*", default=["rule_based", "numpy"],
                     help="variants or references timed in the same blocks (default: rule_based numpy)")
    cmp.add_argument("--blocks", type=positive, default=4, help="timed blocks per candidate, even (default: 4)")
    cmp.add_argument("--calls", type=positive, default=10, help="least calls per block (default: 10)")
    cmp.add_argument("--csv", type=Path, help="also write the per-shape table (and -geomean.csv) here")
    cmp.set_defaults(func=_cmd_compare_db)
