"""``tune``, ``prune``, ``traces``: MetaSchedule's per-profile database."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.gpu import gpu_spec
from ..core.hardware import facts_for, host_facts
from ..core.kernel import check_dtype
from ..core.store import atomic_write, profile_dir
from ..core.tables import to_markdown
from ..schedules.metaschedule.database import (
    KEEP_DEFAULT,
    POPULATION,
    TRIALS_PER_ITER,
    prune,
)
from ..schedules.metaschedule.gpu import GpuTuning, check_can_measure
from ..schedules.metaschedule.traces import summary_counts, traces_table
from ..schedules.metaschedule.tune import RPCSettings, SearchSettings, tune_workloads
from .common import add_workload_args, check_out, positive, say, workload_targets


def _tracker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9190)")
    return host, int(port)


def _cmd_tune(args: argparse.Namespace) -> int:
    rpc = None
    if args.rpc_tracker or args.rpc_key:
        if not (args.rpc_tracker and args.rpc_key):
            say("error: --rpc-tracker and --rpc-key go together")
            return 2
        rpc = RPCSettings(*args.rpc_tracker, args.rpc_key)
    if args.target == "cuda":  # a GPU's database, measured on a GPU (here or through the tracker), never without
        check_can_measure(rpc)
        facts = GpuTuning(gpu_spec(args.arch))
    else:
        if args.arch:
            raise ValueError(f"--arch {args.arch} needs --target cuda")
        check_dtype(args.dtype)
        facts = facts_for(args.target) if args.target else host_facts()
    if not args.verbose:  # our own progress lines replace MetaSchedule's task tables
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    targets = workload_targets(args)
    pdir = profile_dir(facts, args.root)  # type: ignore[arg-type]  (a GpuTuning names its folder too)
    where = f"on the RPC key {args.rpc_key!r} via {args.rpc_tracker[0]}:{args.rpc_tracker[1]}" if rpc else "locally"
    say(f"tuning {len(targets)} workloads to {args.trials} trials each into {pdir}, measuring {where}")
    outcomes = tune_workloads(targets, trials=args.trials, dtype=args.dtype, layout=args.layout, facts=facts,
                              root=args.root,
                              search=SearchSettings(args.per_iter, args.population, args.seed, rpc),
                              emit=say)
    for (label, shape), out in zip(targets, outcomes):
        best = "-" if out.best_gflops is None else f"{out.best_gflops:.1f}"
        print(f"{label:28} trials {out.trials_before:>4} -> {out.trials_now:<4} {out.seconds:7.0f} s  "
              f"best {best} GFLOP/s{'  (already tuned)' if out.skipped else ''}")
    if args.prune:
        for key, (before, after) in prune(pdir, args.prune).items():
            print(f"pruned {key}: {before} -> {after} records")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    pdir = args.dir or profile_dir(host_facts(), args.root)
    for key, (before, after) in prune(pdir, args.keep).items():
        print(f"{key:32} {before:>5} -> {after} records")
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    facts = host_facts()
    out = args.csv or Path(f"traces-{facts.profile}.csv")
    check_out(out, "--csv")
    table = traces_table(facts=facts, root=args.root, top=args.top)
    if table.empty:
        say(f"error: no tuned workloads in {profile_dir(facts, args.root)}; run `python -m matmul tune` first")
        return 2
    counts = summary_counts(table)
    shown = table.drop(columns=["model", "K", "N", "dtype", "tiling"], errors="ignore")
    for col in ("cache_write", "decompose_reduction"):
        shown[col] = shown[col].map({True: "yes", False: "no"})
    print(to_markdown(shown.round(1)))
    print()
    print(to_markdown(counts))
    atomic_write(out, table.to_csv(index=False))
    atomic_write(out.with_name(out.stem + "-counts.csv"), counts.to_csv(index=False))
    say(f"\nwrote {out} and {out.with_name(out.stem + '-counts.csv')}")
    return 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    tun = sub.add_parser(
        "tune", help="MetaSchedule tuning into this CPU profile's database (resumable)",
        description="Tune each workload up to --trials measured trials. Records go to <root>/<profile>/; a run "
                    "that is killed continues where it stopped when started again; a workload that already has "
                    "the trials is skipped.")
    add_workload_args(tun, gpu=True)
    tun.add_argument("--trials", type=positive, default=64, help="measured trials per workload (default: 64)")
    tun.add_argument("--per-iter", type=positive, default=TRIALS_PER_ITER,
                     help="trials measured (and saved) per search iteration (default: %(default)s)")
    tun.add_argument("--population", type=positive, default=POPULATION,
                     help="evolutionary search population per generation (default: %(default)s)")
    tun.add_argument("--seed", type=int, help="MetaSchedule's random seed (default: random)")
    tun.add_argument("--root", type=Path, help="folder of per-profile databases (default: $MATMUL_TUNING_ROOT "
                                               "or the shipped tuning_db/)")
    tun.add_argument("--target", help='JSON LLVM target to tune for, e.g. \'{"kind": "llvm", "mcpu": "znver4", '
                                      '"num-cores": 8}\' (default: this host); it picks the profile folder. '
                                      '`cuda` tunes for a GPU (see --arch) into <root>/cuda/<arch>-<SMs>sm/, '
                                      'measuring on a GPU here or through --rpc-tracker')
    tun.add_argument("--arch", help="CUDA arch for --target cuda (default: this machine's GPU, else sm_80)")
    tun.add_argument("--rpc-tracker", type=_tracker, metavar="HOST:PORT",
                     help="measure on a machine registered with this TVM RPC tracker")
    tun.add_argument("--rpc-key", help="the device key the RPC server registered under")
    tun.add_argument("--prune", type=positive, metavar="K", help="afterwards keep only the K best records per "
                                                                  "workload (see `prune`)")
    tun.set_defaults(func=_cmd_tune)

    pru = sub.add_parser("prune", help="keep only the best records per workload in a profile's database")
    pru.add_argument("--keep", type=positive, default=KEEP_DEFAULT, help="records kept per workload "
                                                                           "(default: %(default)s)")
    pru.add_argument("--root", type=Path, help="folder of per-profile databases (default: the shipped one)")
    pru.add_argument("--dir", type=Path, help="one profile folder (default: this host's profile under --root)")
    pru.set_defaults(func=_cmd_prune)

    tra = sub.add_parser("traces", help="what MetaSchedule chose: the best records' traces as a table, and counts")
    tra.add_argument("--top", type=positive, default=1, help="records per workload, fastest first (default: 1)")
    tra.add_argument("--root", type=Path, help="folder of per-profile databases (default: the shipped one)")
    tra.add_argument("--csv", type=Path, help="where to save the table (default: traces-<profile>.csv; the "
                                              "counts go beside it as -counts.csv)")
    tra.set_defaults(func=_cmd_traces)
