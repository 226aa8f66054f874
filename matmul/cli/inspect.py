"""``info``, ``variants``, ``peak``, ``shapes``, ``describe``, ``verify``, ``show``: the host, the registry and the code."""

from __future__ import annotations

import argparse
import json
import logging

from ..core.hardware import host_facts
from ..core.registry import get_variant, variant_names
from ..core.runner import SOURCE_KINDS, build, count_vector_fma
from ..core.verify import DATA_KINDS, check_memory, verify
from ..core.workloads import KERNELS, MODELS, workloads
from ..measure.peak import computed_fp32_peak, measure_fp32_peak
from ..measure.references import REFERENCES
from ..schedules.rules import RULES, decide, parse_overrides
from .common import add_kernel_args, positive, shape_of


def _cmd_info(args: argparse.Namespace) -> int:
    facts = host_facts()
    if args.json:
        print(json.dumps(facts.as_dict(), indent=2))
    else:
        for key, value in facts.as_dict().items():
            print(f"{key:18} {value}")
    return 0


def _cmd_variants(args: argparse.Namespace) -> int:
    facts = host_facts()
    for name in variant_names():
        v = get_variant(name)
        status = "legal" if v.legal else f"ILLEGAL ({v.illegal_because})"
        print(f"{name:16} {v.family:8} {status:10} {v.summary(facts)}")

    for ref in REFERENCES.values():
        reason = ref.unavailable()
        print(f"{ref.name:16} {'vendor':8} {'available' if not reason else 'MISSING':10} {ref.summary}"
              + (f" ({reason})" if reason else ""))
    return 0


def _cmd_peak(args: argparse.Namespace) -> int:
    for peak in (measure_fp32_peak(), computed_fp32_peak()):
        if peak is not None:
            print(f"{peak.method:9} {peak.gflops:8.1f} GFLOP/s  {peak.detail}")
    return 0


def _cmd_shapes(args: argparse.Namespace) -> int:
    for w in workloads(args.kernels, args.m_values, args.model):
        s = w.shape
        print(f"{w.id:28} M={s.M:<6} K={s.K:<6} N={s.N:<6} {s.flops / 1e9:8.3f} GFLOP")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    overrides = parse_overrides(f"rule_based[{args.set}]")[1] if args.set else None
    plan = decide(shape_of(args), host_facts(), dtype=args.dtype, layout=args.layout, overrides=overrides)
    print(plan.table())
    if args.rules:
        print()
        for rid, text in RULES.items():
            print(f"  {rid:<4} {text}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    check_memory(shape_of(args), args.dtype)  # before the build: a shape that cannot be checked is not compiled
    kernel = build(args.variant, shape_of(args), dtype=args.dtype, layout=args.layout)
    print(f"{args.variant} {kernel.shape} {args.dtype} {args.layout}: {verify(kernel, seed=args.seed, kind=args.data)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    kernel = build(args.variant, shape_of(args), dtype=args.dtype, layout=args.layout)
    text = kernel.source(args.format)
    if args.format == "asm":
        n = count_vector_fma(text, kernel.facts)
        logging.getLogger(__name__).info("%d packed fp32 FMA instructions at %d lanes", n, kernel.facts.simd_lanes_fp32)
    print(text)
    return 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    info = sub.add_parser("info", help="host hardware facts and the LLVM target")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

    sub.add_parser("variants", help="registered schedule variants and vendor references").set_defaults(
        func=_cmd_variants)

    sub.add_parser("peak", help="measure the FP32 FMA peak (and show the computed one)").set_defaults(
        func=_cmd_peak)

    shapes = sub.add_parser("shapes", help="Transformer GEMM shapes")
    shapes.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    shapes.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)}")
    shapes.add_argument("--m-values", type=positive, nargs="+", help="M values (default: the seed sweep)")
    shapes.set_defaults(func=_cmd_shapes)

    desc = sub.add_parser("describe", help="the rule_based plan for a shape: each decision, its rule, the cache budget")
    add_kernel_args(desc)
    desc.set_defaults(variant="rule_based")
    desc.add_argument("--set", metavar="KNOB=V,...", help="pin knobs, as in rule_based[tk=64,jpack=16]")
    desc.add_argument("--rules", action="store_true", help="also list every rule")
    desc.set_defaults(func=_cmd_describe)

    ver = sub.add_parser("verify", help="build a variant and check it against NumPy")
    add_kernel_args(ver)
    ver.add_argument("--seed", type=int, default=0)
    ver.add_argument("--data", choices=DATA_KINDS, default="float")
    ver.set_defaults(func=_cmd_verify)

    show = sub.add_parser("show", help="print the scheduled TIR, LLVM IR or assembly")
    add_kernel_args(show)
    show.add_argument("--format", choices=SOURCE_KINDS, default="asm")
    show.set_defaults(func=_cmd_show)
