"""Operand memory: every timed matmul reads A, B and C from 2 MiB-aligned memory backed by huge pages.

An L2 picks a line's set from its physical address. In 4 KiB pages, an
operand's physical pages lie wherever the kernel found free ones, so which of
its lines share a set, and how many, changes from one allocation to the
next. On the 2-core Emerald Rapids VM (2 MiB L2 of 16 ways: sets repeat
every 128 KiB) copies of the same compiled kernel, each given operands of
its own, read 0.83-0.98x the first in three processes (qkv at M = 16, B 2.25
MiB; a fresh build alike), each group's intervals within +-3%. One
allocation's luck was saved as the kernel's speed, and an A/A pair showed
it as a floor of 10%.

Inside one transparent huge page physical and virtual addresses agree in
their low 21 bits, which hold every set index bit of an L1 or L2 of that
size, so the sets an operand covers follow from its shape alone. With every
operand in huge pages the same copies read 0.984-1.009x, and copies of NumPy
and PyTorch 0.985-1.009x
(``evidence/emeraldrapids-2c-simd16-t2/noise-eighth/copies.csv``). NumPy asks
for huge pages itself only from 4 MiB, so below that the references'
operands are moved here as well (``measure.references``): TVM kernels, NumPy
and PyTorch read the same kind of memory at every size.

Where the kernel grants no huge pages (``transparent_hugepage`` set to
``never``, or not Linux) the memory is still 2 MiB-aligned; :func:`huge_pages`
says which.
"""

from __future__ import annotations

import functools
import mmap
import re
from pathlib import Path

import numpy as np

#: Size and alignment of a transparent huge page on x86-64 and AArch64 (4 KiB base pages).
HUGE_PAGE = 2 << 20
#: Where Linux says whether it grants transparent huge pages: ``always [madvise] never``.
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def operand_empty(shape: tuple[int, ...] | int, dtype: str | np.dtype) -> np.ndarray:
    """An uninitialised array on memory of its own: 2 MiB-aligned, whole huge pages, asked to be huge.

    Each array takes at least one huge page (2 MiB), whatever its size: a matmul's operands are few.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"an array's dimensions cannot be negative, got {shape}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = max(-(-nbytes // HUGE_PAGE), 1) * HUGE_PAGE
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(region, np.uint8)  # keeps ``region`` alive as long as any view of it
    start = -raw.ctypes.data % HUGE_PAGE
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux; a refusal (THP off) leaves ordinary pages
        try:
            region.madvise(mmap.MADV_HUGEPAGE, start, size)
        except OSError:
            pass
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def operand_copy(x: np.ndarray) -> np.ndarray:
    """``x`` copied into :func:`operand_empty` memory (C order)."""
    out = operand_empty(x.shape, x.dtype)
    out[...] = x
    return out


def thp_mode() -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), None where unknown."""
    try:
        found = re.search(r"\[(\w+)\]", THP_MODE_FILE.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def huge_kib(arr: np.ndarray) -> int | None:
    """KiB of huge pages backing ``arr``'s mapping, from ``/proc/self/smaps``; None where unreadable."""
    address = arr.ctypes.data
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        head = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head.group(1), 16) <= address < int(head.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return None


@functools.cache
def huge_pages() -> dict[str, object]:
    """Whether operands get huge pages here: the THP mode, and a probe of two huge pages, written and read back."""
    probe = operand_empty(HUGE_PAGE // 2, np.float32)  # 4 MiB: two huge pages
    probe[...] = 1.0
    kib = huge_kib(probe)
    return {"thp_mode": thp_mode(), "probe_huge_kib": kib,
            "granted": kib is not None and kib >= 2 * HUGE_PAGE // 1024}


__all__ = ["HUGE_PAGE", "huge_kib", "huge_pages", "operand_copy", "operand_empty", "thp_mode"]
