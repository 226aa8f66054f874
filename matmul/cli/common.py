"""Arguments shared by several command groups, and the one way the CLI writes a status line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.gpu import ARCHS
from ..core.kernel import ALL_DTYPES, DTYPES, LAYOUTS
from ..core.registry import TARGETS
from ..core.workloads import (
    KERNELS,
    MODELS,
    MatmulShape,
    ShapeWorkload,
    kernel_shape,
    parse_positive_int,
    workloads,
)


def say(line: str) -> None:
    """A status line on stderr (results go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def check_out(path: str | Path | None, option: str, *, folder: bool = False) -> None:
    """Refuse an output path before any work is done (a ValueError naming the option; exit 2).

    A file (``folder=False``): not an existing folder, and its folder must exist. A folder (``folder=True``):
    not an existing file (missing folders are created when the files are written).
    """
    if path is None:
        return
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{option} {path} is a file; give a folder for the files it writes")
    elif path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give the path of a file to write (a new name inside it, "
                         "or elsewhere)")
    elif not path.parent.is_dir():
        raise ValueError(f"{option} {path}: the folder {path.parent} does not exist; create it or choose another path")


def positive(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        return parse_positive_int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


#: The variant a command builds when none is named, per target kind.
DEFAULT_VARIANT = {"llvm": "full", "cuda": "gpu_tiled"}


def add_kernel_args(p: argparse.ArgumentParser, *, gpu: bool = False) -> None:
    """The kernel a command builds; ``gpu=True`` adds ``--target``/``--arch`` (and float16) for commands that build
    CUDA too."""
    p.add_argument("--variant", help="a registered variant (see `variants`; default: full"
                                     + (" on llvm, gpu_tiled on cuda)" if gpu else ")"))
    if gpu:
        p.add_argument("--target", choices=TARGETS, default="llvm",
                       help="llvm: this CPU (default); cuda: a GPU, built without one (see --arch)")
        p.add_argument("--arch", help=f"CUDA arch for --target cuda, sm_80 or newer (default: this machine's GPU, "
                                      f"else sm_80; checked on {', '.join(ARCHS)})")
    else:
        p.set_defaults(target="llvm", arch=None)
    p.add_argument("--kernel", default="qkv", help=f"one of {', '.join(KERNELS)}")
    p.add_argument("-M", type=positive, default=128, help="rows (default 128)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=positive, nargs=3, metavar=("M", "K", "N"),
                   help="explicit M K N instead of --kernel/-M/--model")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    if gpu:
        p.add_argument("--dtype", choices=ALL_DTYPES, default="float32",
                       help="float16 (float32 accumulation) is for --target cuda")
    else:
        p.add_argument("--dtype", choices=DTYPES, default="float32")


def variant_of(args: argparse.Namespace) -> str:
    """The --variant given, or the default of the --target; --arch without --target cuda is refused."""
    if args.arch and args.target != "cuda":
        raise ValueError(f"--arch {args.arch} needs --target cuda")
    return args.variant or DEFAULT_VARIANT[args.target]


def add_workload_args(p: argparse.ArgumentParser, *, gpu: bool = False) -> None:
    """The workload grid of `tune` and `compare-db` (read back by :func:`_tune_targets`); ``gpu=True`` also
    offers float16 (for `tune --target cuda`)."""
    p.add_argument("--kernels", nargs="+", help=f"subset of {', '.join(KERNELS)} (default: all)")
    p.add_argument("--m-values", type=positive, nargs="+", help="M values (default: the seed sweep)")
    p.add_argument("--model", default="bert-base", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--shape", type=positive, nargs=3, metavar=("M", "K", "N"), help="one explicit M K N instead")
    p.add_argument("--layout", choices=LAYOUTS, default="NN")
    p.add_argument("--dtype", choices=ALL_DTYPES if gpu else DTYPES, default="float32",
                   help="float16 (float32 accumulation) is for --target cuda" if gpu else None)


def shape_of(args: argparse.Namespace) -> MatmulShape:
    """The shape the --shape or --kernel/-M/--model arguments name."""
    if args.shape:
        return MatmulShape(*args.shape)
    return kernel_shape(args.kernel, args.M, args.model)


def workload_targets(args: argparse.Namespace) -> list[tuple[str, MatmulShape]]:
    if args.shape:
        w = ShapeWorkload(MatmulShape(*args.shape))
        return [(w.id, w.shape)]
    return [(w.id, w.shape) for w in workloads(args.kernels, args.m_values, args.model)]
