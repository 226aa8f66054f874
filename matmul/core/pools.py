"""How long the thread pools the suite times keep spinning once idle: set before they load.

Every interleaved round switches between thread pools (TVM's, OpenBLAS's
under NumPy, PyTorch's OpenMP), and before each switch the timer waits until
the previous pool's workers stop spinning, or they would take a core from
the next library (:func:`~matmul.measure.timing.wait_for_quiet`). How long
they spin is each library's own setting: OpenBLAS about 2^28 cycles (0.13 s
measured on the 2-core Emerald Rapids VM), TVM's pool 300000 yields (56 ms).
Those waits were most of a group's time there (4.3 of 6.1 s for qkv M=128
with eight cases; ``evidence/emeraldrapids-2c-simd16-t2/noise-eighth/settle.txt``),
and every BERT shape of the default grid ended inconclusive at +-3%.

Here both are shortened to about 2 ms, through the variables the libraries
read when they start (OpenBLAS when NumPy is imported, TVM when its pool
starts), and the waits drop to the timer's minimum, 10 ms. The timed calls
do not change: a block's calls run back to back, microseconds apart, so the
workers never reach even the shorter limit inside one, and each block's
untimed first call wakes them. Side by side on that host, NumPy's, PyTorch's
and ``ml_guided``'s ratios to ``rule_based`` read the same with either
setting (within the groups' own +-2-5%; ``evidence/README.md``).

Importing :mod:`matmul` applies them (this module comes first); a user's
own value of either variable wins (``setdefault``). NumPy imported before
:mod:`matmul` has already read OpenBLAS's; :func:`pool_spin` says so.
"""

from __future__ import annotations

import os
import sys

#: Variable -> value. OpenBLAS's is log2 of TSC cycles (4..30; 2^22 is 2 ms at 2 GHz), TVM's a count of yields.
SPIN_DEFAULTS: dict[str, str] = {"OPENBLAS_THREAD_TIMEOUT": "22", "TVM_THREAD_POOL_SPIN_COUNT": "10000"}
#: The module whose import reads each variable (once: a later change has no effect).
READ_BY = {"OPENBLAS_THREAD_TIMEOUT": "numpy", "TVM_THREAD_POOL_SPIN_COUNT": "tvm"}

_late: set[str] = set()


def apply_spin_defaults() -> None:
    """Set each of :data:`SPIN_DEFAULTS` the user has not set; note those whose library had loaded already.

    TVM's pool reads its variable when it first runs a parallel kernel, not on import, so only NumPy can
    come too early.
    """
    for name, value in SPIN_DEFAULTS.items():
        if name not in os.environ and READ_BY[name] == "numpy" and "numpy" in sys.modules:
            _late.add(name)
        os.environ.setdefault(name, value)


def pool_spin() -> dict[str, object]:
    """The spin settings in effect: each variable's value, and ``late``, those set after their library read it."""
    return {**{name: os.environ.get(name) for name in SPIN_DEFAULTS}, "late": sorted(_late)}


apply_spin_defaults()  # on import: ``matmul/__init__.py`` imports this module before anything that loads NumPy

__all__ = ["READ_BY", "SPIN_DEFAULTS", "apply_spin_defaults", "pool_spin"]
