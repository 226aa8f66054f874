"""Check a kernel's output against NumPy with an error bound that scales with K.

The reference is computed in float64. For float data the allowed error per
element is the classical dot-product bound (Higham, *Accuracy and Stability
of Numerical Algorithms*, eq. 3.5)::

    |C - A @ B| <= gamma_(K+1) * (|A| @ |B|),   gamma_n = n u / (1 - n u)

with ``u`` the unit roundoff of the kernel's dtype. It holds for every
summation order, so tiling, vectorising or unrolling the reduction can never
make a correct kernel fail it, while a missing or doubled term, a wrong index
or a stale accumulator exceeds it.

Integer-valued data (``kind="int"``) is exact in floating point for the
sizes used here, so it is checked for equality: the strictest check there is.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .kernel import ALL_DTYPES, b_shape, check_dtype, check_layout
from .workloads import MatmulShape

#: Data kinds :func:`make_inputs` generates.
DATA_KINDS = ("float", "int")
# Integer data lies in [-_INT_RANGE, _INT_RANGE]; sums stay exact while
# K * _INT_RANGE**2 < 2**24 (float32 mantissa), i.e. K < 1.8 million.
_INT_RANGE = 3


class VerificationError(AssertionError):
    """A kernel's output differs from the reference beyond the allowed error."""


@dataclasses.dataclass(frozen=True)
class Check:
    """Outcome of comparing one output with the reference."""

    ok: bool
    max_abs_error: float
    worst_index: tuple[int, int]
    allowed_there: float
    kind: str

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{verdict}: max |C - ref| = {self.max_abs_error:.3g} at {self.worst_index} "
            f"(allowed there {self.allowed_there:.3g}, {self.kind} data)"
        )


class OutOfMemory(MemoryError):
    """Verifying a shape would need more memory than the host has free."""


def available_memory() -> int | None:
    """Bytes the host can still hand out without swapping (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_needed(shape: MatmulShape, dtype: str = "float32") -> int:
    """Peak bytes :func:`verify` holds for a shape: the inputs and output on the host and the device, and the
    float64 reference with its error bound (``|A| @ |B|``) and the float64 copies of A and B they are made from."""
    item = np.dtype(dtype).itemsize
    m, n, k = shape.M, shape.N, shape.K
    return 2 * item * (m * k + k * n + m * n) + 8 * (m * k + k * n) + 3 * 8 * m * n


def check_memory(shape: MatmulShape, dtype: str = "float32") -> None:
    """Refuse, before anything is allocated, a shape whose verification does not fit in free memory."""
    need, free = memory_needed(shape, dtype), available_memory()
    if free is not None and need > free:
        raise OutOfMemory(
            f"verifying {shape} ({dtype}) needs about {need / 2**30:.1f} GiB but the host has "
            f"{free / 2**30:.1f} GiB free; choose a smaller M, N or K")


def make_inputs(
    shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN", seed: int = 0, kind: str = "float"
) -> tuple[np.ndarray, np.ndarray]:
    """Random A and B for a shape; B is stored as the layout says."""
    check_dtype(dtype, ALL_DTYPES)
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}; choose one of: {', '.join(DATA_KINDS)}")
    check_memory(shape, dtype)
    rng = np.random.default_rng(seed)
    dims_a, dims_b = (shape.M, shape.K), b_shape(shape, layout)
    if kind == "int":
        return (
            rng.integers(-_INT_RANGE, _INT_RANGE + 1, dims_a).astype(dtype),
            rng.integers(-_INT_RANGE, _INT_RANGE + 1, dims_b).astype(dtype),
        )
    return rng.uniform(-1.0, 1.0, dims_a).astype(dtype), rng.uniform(-1.0, 1.0, dims_b).astype(dtype)


def _b_as_kn(b: np.ndarray, layout: str) -> np.ndarray:
    return b if check_layout(layout) == "NN" else b.T


def reference(a: np.ndarray, b: np.ndarray, layout: str = "NN") -> np.ndarray:
    """A @ B in float64, whatever the layout of B."""
    return a.astype(np.float64) @ _b_as_kn(b, layout).astype(np.float64)


def error_bound(a: np.ndarray, b: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """Per-element allowed error ``gamma_(K+1) * (|A| @ |B|)`` (see module docstring)."""
    k = a.shape[1]
    u = float(np.finfo(dtype).eps) / 2
    n = k + 1
    if n * u >= 0.5:
        raise ValueError(f"K={k} is too large for a meaningful {dtype} error bound")
    gamma = n * u / (1 - n * u)
    mag = np.abs(a).astype(np.float64) @ np.abs(_b_as_kn(b, layout)).astype(np.float64)
    # the float64 reference carries its own, far smaller, rounding error
    return gamma * mag + np.finfo(np.float64).eps * k * mag


def compare(c: np.ndarray, a: np.ndarray, b: np.ndarray, *, layout: str = "NN", kind: str = "float") -> Check:
    """Compare an output with the reference; exact for integer data."""
    ref = reference(a, b, layout)
    if c.shape != ref.shape:
        raise ValueError(f"output shape {c.shape} does not match the reference {ref.shape}")
    err = np.abs(c.astype(np.float64) - ref)
    err = np.where(np.isnan(err), np.inf, err)  # NaN is always a mismatch
    allowed = np.zeros_like(ref) if kind == "int" else error_bound(a, b, layout, str(c.dtype))
    excess = err - allowed
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    worst_err = np.unravel_index(int(np.argmax(err)), err.shape)
    ok = bool(np.all(excess <= 0))
    idx = worst if not ok else worst_err
    return Check(ok, float(err[idx]), (int(idx[0]), int(idx[1])), float(allowed[idx]), kind)


def garbage(shape: tuple[int, int], dtype: str) -> np.ndarray:
    """An output buffer full of garbage: NaN for floating types (any sum with it stays NaN), else a large value."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return np.full(shape, np.nan, dtype=dt)
    return np.full(shape, np.iinfo(dt).max // 3, dtype=dt)


#: Calls checked by :func:`check_calls`: the first on a garbage-filled C, the second on C as the first left it,
#: so a kernel that accumulates into C instead of overwriting it (a lost reduction init) fails one of them.
CHECKED_CALLS = 2


def check_calls(call, output, a: np.ndarray, b: np.ndarray, *, layout: str = "NN", kind: str = "float",
                what: str = "kernel", calls: int = CHECKED_CALLS) -> Check:
    """Call ``call()`` ``calls`` times and check ``output()`` after each one.

    ``output`` returns the current C (its buffer must start as
    :func:`garbage`). Returns the last check.

    Raises
    ------
    VerificationError
        Naming the call that went wrong, the worst element and the error allowed there.
    """
    check = None
    for n in range(1, calls + 1):
        call()
        check = compare(output(), a, b, layout=layout, kind=kind)
        if not check.ok:
            first = "on an output buffer full of garbage" if n == 1 else "again on its own output (does it zero C?)"
            raise VerificationError(f"{what}, call {n} {first}: {check}")
    return check


def verify(kernel, *, seed: int = 0, kind: str = "float") -> Check:
    """Run a :class:`~matmul.core.runner.CompiledKernel` twice on random data and check each result.

    C starts full of garbage and the second call runs on the first call's
    output, so a kernel that never zeroes C fails (see :func:`check_calls`).

    Raises
    ------
    VerificationError
        With the worst element, its error and the error allowed there.
    """
    a, b = make_inputs(kernel.shape, dtype=kernel.dtype, layout=kernel.layout, seed=seed, kind=kind)
    ta, tb, tc = kernel.tensors(a, b)
    return check_calls(lambda: kernel(ta, tb, tc), tc.numpy, a, b, layout=kernel.layout, kind=kind,
                       what=f"{kernel.variant} on {kernel.shape} ({kernel.dtype}, {kernel.layout})")
