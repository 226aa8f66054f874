"""``e2e``: one Transformer encoder layer in Relax, every matmul scheduled by a suite variant, profiled per PrimFunc."""

from __future__ import annotations

import argparse
import json
import logging

import pandas as pd

from ..core.hardware import host_facts
from ..core.store import atomic_write, profile_dir, provenance
from ..core.tables import to_markdown
from ..core.workloads import MODELS
from ..e2e.layer import layer_spec
from ..e2e.profile import build_layer, check_layer, profile_layer
from ..e2e.schedule import check_schedule, schedule_names
from ..e2e.tune import E2E_DIR, tune_layer
from ..e2e.versus import WITHIN, check_versus, fused_vs_kernels
from ..schedules.metaschedule.database import TRIALS_PER_ITER
from ..schedules.metaschedule.tune import SearchSettings
from .common import check_out, positive, say


def _cmd_e2e(args: argparse.Namespace) -> int:
    check_out(args.json, "--json")
    spec = layer_spec(args.model, args.seq, args.batch)
    check_schedule(args.schedule)
    if args.vs_kernels:
        check_versus(args.schedule)
    facts = host_facts()
    if args.tune:
        say(f"tuning the matmul tasks of {spec.label()} to {args.tune} trials each into "
            f"{profile_dir(facts) / E2E_DIR} (resumable)")
        if not args.verbose:  # our own progress lines replace MetaSchedule's task tables
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        search = SearchSettings(per_iter=args.per_iter, seed=args.seed)
        for o in tune_layer(spec, trials=args.tune, facts=facts, search=search, emit=say):
            best = "-" if o.best_gflops is None else f"{o.best_gflops:.1f} GFLOP/s"
            say(f"{o.name} ({o.describe}): {o.trials_before} -> {o.trials_now} trials, best {best}")
    say(f"building {spec.label()} with schedule {args.schedule} for {facts.profile}")
    built = build_layer(spec, args.schedule, facts=facts)
    err = None if args.no_check else check_layer(built)
    prof = profile_layer(built, repeat=args.repeat)  # the FMA peak probed between its passes
    peak = prof.peak_gflops
    table = pd.DataFrame([{
        "primfunc": r.name, "kind": r.kind, "schedule": r.schedule, "calls": r.calls, "ms": 1e3 * r.seconds,
        "share": 100 * r.share, "gflops": r.gflops, "pct_peak": r.pct_peak, "loads_per_fma": r.loads_per_fma,
        "stack_loads": r.stack_loads, "epilogue": r.epilogue,
    } for r in prof.rows])
    print(to_markdown(table))
    flops = spec.matmul_flops()
    print(f"\nforward pass: {1e3 * prof.forward_s:.3f} ms (median of {len(prof.forward_samples)}, VM time_evaluator); "
          f"PrimFuncs {1e3 * sum(r.seconds for r in prof.rows):.3f} ms under the instrument; "
          f"matmuls {100 * prof.matmul_share:.1f}% of PrimFunc time; "
          f"{flops / prof.forward_s / 1e9:.1f} matmul GFLOP/s over the pass "
          f"({100 * flops / prof.forward_s / 1e9 / peak:.1f}% of the {peak:.0f} GFLOP/s FMA peak, the median of "
          f"{len(prof.peak_samples)} probes between the profiled passes)")
    print("max |error| vs the float64 NumPy layer: " + ("not checked" if err is None else f"{err:.3g}"))
    versus = []
    if args.vs_kernels:
        say(f"each matmul function alone against its kernel under {args.schedule}, interleaved "
            f"({args.vs_kernels} blocks, an A/A copy of the function beside)")
        versus = [r.row() for r in fused_vs_kernels(spec, args.schedule, facts=facts, blocks=args.vs_kernels,
                                                    progress=say, built=built)]
        print("\n" + to_markdown(pd.DataFrame(versus)))
        timed = [r for r in versus if r["fused_over_kernel"] is not None]
        print(f"\n{sum(bool(r['within_10pct']) for r in timed)} of {len(timed)} 2-D matmul functions within "
              f"{100 * (WITHIN - 1):.0f}% of their kernel alone")
    if args.json:
        doc = {"model": spec.config.name, "seq": spec.seq, "batch": spec.batch, "schedule": args.schedule,
               "profile": facts.profile, "max_error": err, "build_s": built.build_s, "matmul_flops": flops,
               "plans": [p.as_dict() for p in built.plans], **prof.as_dict(), "vs_kernels": versus,
               **provenance()}
        atomic_write(args.json, json.dumps(doc, indent=1, default=str))
        say(f"wrote {args.json}")
    return 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    p = sub.add_parser("e2e", help="a Transformer encoder layer in Relax: schedule every matmul, check, profile per op")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--seq", type=positive, default=128, help="sequence length (default 128)")
    p.add_argument("--batch", type=positive, default=1, help="batch (default 1)")
    p.add_argument("--schedule", default="rule_based",
                   help=f"how matmuls are scheduled: one of {', '.join(schedule_names())} (default rule_based)")
    p.add_argument("--repeat", type=positive, default=10, help="forward passes timed (default 10)")
    p.add_argument("--no-check", action="store_true", help="skip the check against the float64 NumPy layer")
    p.add_argument("--tune", type=positive, metavar="TRIALS",
                   help="first tune every matmul function of the layer as its own MetaSchedule task up to TRIALS "
                        "measured trials (resumable; records in tuning_db/<profile>/e2e/), for --schedule metaschedule")
    p.add_argument("--per-iter", type=positive, default=TRIALS_PER_ITER,
                   help=f"--tune: trials measured and saved per search iteration (default {TRIALS_PER_ITER})")
    p.add_argument("--seed", type=int, help="--tune: MetaSchedule's random seed (default: random)")
    p.add_argument("--vs-kernels", type=positive, metavar="BLOCKS", nargs="?", const=8, default=0,
                   help="also time each 2-D matmul function alone against the canonical kernel of its shape under "
                        "the same variant, interleaved in BLOCKS blocks (default 8) with an A/A copy")
    p.add_argument("--json", metavar="PATH", help="also save the table, the plans and the timings as JSON")
    p.set_defaults(func=_cmd_e2e)


__all__ = ["add_parsers"]
