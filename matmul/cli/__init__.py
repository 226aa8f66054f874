"""``python -m matmul``: inspect the host, the variants and the generated code; tune; measure side by side;
train and evaluate the learned variant; report on saved benchmark runs.

Each command group is one module that adds its own sub-parsers (``add_parsers``); this module only
assembles them and turns the library's errors into one-line messages with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tvm.s_tir import ScheduleError

from ..core.hardware import HardwareError
from ..core.verify import VerificationError
from . import e2e, inspect, measure, ml, report, tune

#: Command groups, in the order their commands are listed.
GROUPS = (inspect, report, measure, tune, ml, e2e)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m matmul", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ScheduleError as err:
        notes = "; ".join(getattr(err, "__notes__", []))
        last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        print(f"error: schedule is illegal: {last}" + (f" ({notes})" if notes else ""), file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, LookupError, HardwareError, VerificationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        why = str(err) or "the arrays for this shape do not fit; choose a smaller shape"
        print(f"error: out of memory: {why}", file=sys.stderr)
        return 2
    except OSError as err:  # a file that cannot be read or written: name it
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot use{where}: {err.strerror or err}", file=sys.stderr)
        return 2


__all__ = ["main", "parser"]
