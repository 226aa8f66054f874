"""``info``, ``variants``, ``peak``, ``shapes``, ``describe``, ``verify``, ``show``: the host, the registry and the code."""

from __future__ import annotations

import argparse
import json
import logging

from ..core.hardware import host_facts
from ..core.hotloop import AsmError
from ..core.memory import huge_pages
from ..core.pools import pool_spin
from ..core.registry import TARGETS, get_variant, variant_names
from ..core.runner import CUDA_SOURCE_KINDS, SOURCE_KINDS, build, build_gpu, count_vector_fma
from ..core.verify import DATA_KINDS, check_memory, verify
from ..core.workloads import KERNELS, MODELS, workloads
from ..measure.peak import computed_fp32_peak, measure_fp32_peak
from ..measure.references import REFERENCES
from ..schedules.rules import RULES, decide, parse_overrides, rule_knobs
from .common import add_kernel_args, positive, shape_of, variant_of


def _cmd_info(args: argparse.Namespace) -> int:
    info = {**host_facts().as_dict(), "pool_spin": pool_spin(), "operand_memory": huge_pages()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:18} {value}")
    return 0


def _cmd_variants(args: argparse.Namespace) -> int:
    facts = host_facts()
    for name in variant_names(target=args.target):
        v = get_variant(name)
        status = "legal" if v.legal else f"ILLEGAL ({v.illegal_because})"
        serves = f" [{'/'.join(v.dtypes)}; {'/'.join(v.layouts)}]" if v.target != "llvm" else ""
        print(f"{name:16} {v.family:8} {status:10} {v.summary(facts)}{serves}")
    if args.target == "cuda":
        return 0

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


def _describe_overrides(args: argparse.Namespace) -> dict | None:
    """The knobs --set pins; a ValueError naming the knobs for a --set that is not ``knob=value,...`` and for a
    --variant other than rule_based (describe plans rule_based only)."""
    knobs = ", ".join(sorted(rule_knobs()))
    if args.variant != "rule_based":
        raise ValueError(f"describe shows the rule_based plan only, not --variant {args.variant}; pin rule_based's "
                         f"knobs with --set knob=value,... (knobs: {knobs})")
    if not args.set:
        return None
    parsed = None if "[" in args.set or "]" in args.set else parse_overrides(f"rule_based[{args.set}]")
    if parsed is None:
        raise ValueError(f"--set {args.set!r}: --set takes knob=value,... without the variant name (e.g. --set "
                         f"tk=64,jpack=16); knobs: {knobs}")
    return parsed[1]


def _cmd_describe(args: argparse.Namespace) -> int:
    overrides = _describe_overrides(args)
    plan = decide(shape_of(args), host_facts(), dtype=args.dtype, layout=args.layout, overrides=overrides)
    print(plan.table())
    if args.rules:
        print()
        for rid, text in RULES.items():
            print(f"  {rid:<4} {text}")
    return 0


def _build(args: argparse.Namespace):
    variant = variant_of(args)
    if args.target == "cuda":
        return build_gpu(variant, shape_of(args), dtype=args.dtype, layout=args.layout, arch=args.arch)
    return build(variant, shape_of(args), dtype=args.dtype, layout=args.layout)


def _cmd_verify(args: argparse.Namespace) -> int:
    check_memory(shape_of(args), args.dtype)  # before the build: a shape that cannot be checked is not compiled
    kernel = _build(args)
    where = f" on {kernel.spec.arch}" if args.target == "cuda" else ""
    print(f"{kernel.variant} {kernel.shape} {args.dtype} {args.layout}{where}: "
          f"{verify(kernel, seed=args.seed, kind=args.data)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    kernel = _build(args)
    fmt = args.format or ("cuda" if args.target == "cuda" else "asm")
    text = kernel.source(fmt)
    if fmt == "asm":
        n = count_vector_fma(text, kernel.facts)
        logging.getLogger(__name__).info("%d packed fp32 FMA instructions at %d lanes", n, kernel.facts.simd_lanes_fp32)
    print(text)
    if args.figures and args.target != "cuda":
        try:
            print(f"# {kernel.hot_loop(text if fmt == 'asm' else None).describe()}")
        except AsmError as e:  # a scalar kernel (baseline) has no loop of packed FMAs: say so, not fail
            print(f"# no hot loop: {e}")
    elif args.figures:
        for name, fig in kernel.figures().items():
            print(f"// ptxas {kernel.spec.arch} {name}: {fig['registers']} registers, {fig['shared_bytes']} bytes "
                  f"shared memory, {fig['spill_stores']}/{fig['spill_loads']} bytes spilled (stores/loads), "
                  f"{fig['stack_bytes']} bytes stack")
    return 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    info = sub.add_parser("info", help="host hardware facts and the LLVM target")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

    var = sub.add_parser("variants", help="registered schedule variants and vendor references")
    var.add_argument("--target", choices=TARGETS, default="llvm", help="llvm (default) or cuda variants")
    var.set_defaults(func=_cmd_variants)

    sub.add_parser("peak", help="measure the FP32 FMA peak (and show the computed one)").set_defaults(
        func=_cmd_peak)

    shapes = sub.add_parser("shapes", help="Transformer GEMM shapes")
    shapes.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    shapes.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)}")
    shapes.add_argument("--m-values", type=positive, nargs="+", help="M values (default: the seed sweep)")
    shapes.set_defaults(func=_cmd_shapes)

    desc = sub.add_parser("describe", help="the rule_based plan for a shape: each decision, its rule, the cache budget")
    add_kernel_args(desc)
    desc.set_defaults(variant="rule_based")  # the only one it plans: any other --variant is refused
    desc.add_argument("--set", metavar="KNOB=V,...", help="pin knobs, as in rule_based[tk=64,jpack=16]")
    desc.add_argument("--rules", action="store_true", help="also list every rule")
    desc.set_defaults(func=_cmd_describe)

    ver = sub.add_parser("verify", help="build a variant and check it against NumPy")
    add_kernel_args(ver, gpu=True)
    ver.add_argument("--seed", type=int, default=0)
    ver.add_argument("--data", choices=DATA_KINDS, default="float")
    ver.set_defaults(func=_cmd_verify)

    show = sub.add_parser("show", help="print the scheduled TIR, LLVM IR or assembly (CUDA C or PTX for --target cuda)")
    add_kernel_args(show, gpu=True)
    show.add_argument("--format", choices=tuple(dict.fromkeys(SOURCE_KINDS + CUDA_SOURCE_KINDS)),
                      help="tir, ll, asm (default) on llvm; tir, cuda (default), ptx on cuda")
    show.add_argument("--figures", action="store_true",
                      help="also the hot loop's FMAs, loads per FMA and stack reloads (llvm), or ptxas's "
                           "registers, shared memory and spills per kernel (--target cuda)")
    show.set_defaults(func=_cmd_show)
