"""Arguments shared by several command groups, and the one way the CLI writes a status line."""

from __future__ import annotations

import argparse
import sys

from ..core.kernel import DTYPES, LAYOUTS
from ..core.workloads import (
    KERNELS,
    MODELS,
    MatmulShape,
    kernel_shape,
    parse_positive_int,
    workloads,
)


def say(line: str) -> None:
    """A status line on stderr (results go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def positive(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        return parse_positive_int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="full", help="a registered variant (see `variants`)")
    p.add_argument("--kernel", default="qkv", help=f"one of {', '.join(KERNELS)}")
    p.add_argument("-M", type=positive, default=128, help="rows (default 128)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=positive, nargs=3, metavar=("M", "K", "N"),
                   help="explicit M K N instead of --kernel/-M/--model")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    p.add_argument("--dtype", choices=DTYPES, default="float32")


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """The workload grid of `tune` and `compare-db` (read back by :func:`_tune_targets`)."""
    p.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    p.add_argument("--m-values", type=positive, nargs="+", help="M values (default: the seed sweep)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=positive, nargs=3, metavar=("M", "K", "N"), help="one explicit M K N instead")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    p.add_argument("--dtype", choices=DTYPES, default="float32")


def shape_of(args: argparse.Namespace) -> MatmulShape:
    """The shape the --shape or --kernel/-M/--model arguments name."""
    if args.shape:
        return MatmulShape(*args.shape)
    return kernel_shape(args.kernel, args.M, args.model)


def workload_targets(args: argparse.Namespace) -> list[tuple[str, MatmulShape]]:
    if args.shape:
        s = MatmulShape(*args.shape)
        return [(f"M{s.M}xK{s.K}xN{s.N}", s)]
    return [(w.id, w.shape) for w in workloads(args.kernels, args.m_values, args.model)]
