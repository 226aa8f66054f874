"""Vendor references timed in the same grid as the TVM variants.

``numpy`` is ``np.matmul`` on NumPy's bundled OpenBLAS, always available.
``torch`` is ``torch.matmul`` on PyTorch's CPU build (MKL/oneDNN), available
when the ``torch`` extra is installed. Both are pinned to the same thread
count as TVM's runtime pool (:attr:`HostFacts.runtime_threads`), so a speedup
compares equal resources; both write into a preallocated output so the timed
call allocates nothing, as the TVM kernels do.

For NT the B operand is stored ``(N, K)`` and passed transposed, so the
library sees the layout and picks its own transposed path.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.kernel import check_dtype, check_layout
from ..core.memory import operand_empty
from ..core.workloads import MatmulShape
from .timing import blas_threads

#: A prepared reference: a zero-argument call that writes C, and C itself.
Prepared = tuple[Callable[[], object], Callable[[], np.ndarray]]


@dataclass(frozen=True)
class Reference:
    """A vendor library matmul usable as a benchmark variant."""

    name: str
    summary: str
    _unavailable: Callable[[], str | None]
    _prepare: Callable[[np.ndarray, np.ndarray, str, int], Prepared]
    _threads: Callable[[int], contextlib.AbstractContextManager]

    def unavailable(self) -> str | None:
        """None when usable, else why not (and how to install it)."""
        return self._unavailable()

    def prepare(self, a: np.ndarray, b: np.ndarray, layout: str, threads: int) -> Prepared:
        """Bind inputs (B stored as the layout says) to a call and its output."""
        check_layout(layout)
        check_dtype(str(a.dtype))
        reason = self.unavailable()
        if reason:
            raise RuntimeError(f"reference {self.name!r} is unavailable: {reason}")
        return self._prepare(a, b, layout, threads)

    def threads(self, threads: int) -> contextlib.AbstractContextManager:
        """Context in which the library uses ``threads`` threads."""
        if threads <= 0:
            raise ValueError(f"thread count must be positive, got {threads}")
        return self._threads(threads)


# --------------------------------------------------------------------------- numpy
def _numpy_prepare(a: np.ndarray, b: np.ndarray, layout: str, threads: int) -> Prepared:
    rhs = b if layout == "NN" else b.T
    c = operand_empty((a.shape[0], rhs.shape[1]), a.dtype)
    return (lambda: np.matmul(a, rhs, out=c)), (lambda: c)


def _numpy_threads(threads: int) -> contextlib.AbstractContextManager:
    return blas_threads(threads)


# --------------------------------------------------------------------------- torch
def _torch_unavailable() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError as err:
        return f"PyTorch is not installed ({err}); install the extra: pip install -e '.[torch]'"
    return None


def _torch_prepare(a: np.ndarray, b: np.ndarray, layout: str, threads: int) -> Prepared:
    import torch

    ta = torch.from_numpy(a)
    tb = torch.from_numpy(b)
    rhs = tb if layout == "NN" else tb.t()
    tc = torch.from_numpy(operand_empty((a.shape[0], rhs.shape[1]), a.dtype))

    def call() -> object:
        with torch.inference_mode():
            return torch.matmul(ta, rhs, out=tc)

    return call, (lambda: tc.numpy())


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


REFERENCES: dict[str, Reference] = {
    "numpy": Reference(
        "numpy", "np.matmul on NumPy's bundled OpenBLAS", lambda: None, _numpy_prepare, _numpy_threads
    ),
    "torch": Reference(
        "torch", "torch.matmul on PyTorch's CPU build (MKL/oneDNN)", _torch_unavailable, _torch_prepare, _torch_threads
    ),
}


def reference_names() -> list[str]:
    return list(REFERENCES)


def get_reference(name: str) -> Reference:
    try:
        return REFERENCES[name]
    except KeyError:
        raise ValueError(f"unknown reference {name!r}; choose one of: {', '.join(REFERENCES)}") from None


def is_reference(name: str) -> bool:
    return name in REFERENCES


# --------------------------------------------------------------------------- numpy alone
_ALONE_SCRIPT = Path(__file__).with_name("_numpy_alone.py")


def numpy_alone(
    shapes: Sequence[MatmulShape], *, layout: str = "NN", threads: int, calls: int = 20, timeout: float = 300
) -> dict[MatmulShape, float]:
    """Median seconds of ``np.matmul`` per shape, measured in a fresh process.

    The child imports NumPy and nothing else of this project (no TVM, no
    PyTorch), so its figures are NumPy timed alone: the yardstick for the
    NumPy figures measured inside the suite.
    """
    check_layout(layout)
    if not shapes:
        return {}
    request = {"shapes": [[s.M, s.K, s.N] for s in shapes], "layout": layout, "threads": threads, "calls": calls}
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, str(_ALONE_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"numpy-alone child failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    medians = json.loads(proc.stdout)["medians"]
    return {s: float(m) for s, m in zip(shapes, medians, strict=True)}


__all__ = [
    "REFERENCES",
    "Reference",
    "get_reference",
    "is_reference",
    "numpy_alone",
    "reference_names",
]
