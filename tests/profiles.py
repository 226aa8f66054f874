"""Hardware facts profiles for decision-level tests, whatever the host.

Each is the host's facts with the CPU-dependent fields replaced, so the rules, the template, the evidence
studies and the learned variant's clamps are checked on an AVX2, two AVX-512 (full- and half-rate FMAs) and
a NEON machine (and a 12-thread one) on any host. Expected values in tests are derived from these facts, never
written for one CPU.
"""

from __future__ import annotations

import dataclasses

from matmul import host_facts
from matmul.core.hardware import HostFacts, facts_for
from matmul.schedules.rules import HALF_RATE_UNPACKED_MAX_ROWS

HOST = host_facts()
#: Zen 3: AVX2, 8 fp32 lanes, 16 vector registers, 32 KiB L1d, 512 KiB 8-way L2, 32 MiB L3 (a CCX's).
AVX2 = dataclasses.replace(HOST, mcpu="znver3", triple="x86_64-unknown-linux-gnu", simd_lanes_fp32=8,
                           isa=("sse2", "avx", "avx2", "fma"), l1d_bytes=32 * 1024, l2_bytes=512 * 1024,
                           l2_ways=8, l3_bytes=32 * 1024 * 1024, runtime_threads=2, num_cores=2,
                           half_rate_fma=False)
#: Zen 5 / Sapphire Rapids class: AVX-512, 16 lanes, 32 registers, 48 KiB L1d, 1 MiB 16-way L2 (L3 as Zen 3's).
AVX512 = dataclasses.replace(AVX2, mcpu="znver5", simd_lanes_fp32=16,
                             isa=("sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"),
                             l1d_bytes=48 * 1024, l2_bytes=1024 * 1024, l2_ways=16)
#: Zen 4: AVX-512 on 256-bit units (its 16-lane FMAs issue at half rate), 32 KiB L1d, 1 MiB 8-way L2.
ZEN4 = dataclasses.replace(AVX512, mcpu="znver4", l1d_bytes=32 * 1024, l2_ways=8, half_rate_fma=True)
#: An AArch64 core: NEON, 4 lanes, 32 registers, 64 KiB L1d, 1 MiB 8-way L2 (L3 as Zen 3's).
NEON = dataclasses.replace(AVX2, mcpu="neoverse-n1", triple="aarch64-unknown-linux-gnu", simd_lanes_fp32=4,
                           isa=(), l1d_bytes=64 * 1024, l2_bytes=1024 * 1024)
#: AVX2 with 12 runtime threads.
BIG = dataclasses.replace(AVX2, runtime_threads=12, num_cores=12)

PROFILES = {"avx2": AVX2, "avx512": AVX512, "avx512-half-rate": ZEN4, "neon": NEON, "12-threads": BIG}


def _narrower() -> dict[str, HostFacts]:
    """A target narrower than the host that the host still runs: on an AVX-512 x86 host, AVX2 (``haswell``)."""
    if HOST.arch != "x86_64" or HOST.simd_lanes_fp32 <= 8:
        return {}
    facts = facts_for({"kind": "llvm", "mcpu": "haswell", "num-cores": HOST.num_cores})
    return {"avx2-target": facts} if facts.simd_lanes_fp32 == 8 and not facts.missing_features else {}


#: Targets this host can execute: its own, and where it has AVX-512 the AVX2 target too, so tests that run
#: kernels check two ISAs on one machine. Their real caches are the host's; only the code differs.
RUNNABLE = {"host": HOST, **_narrower()}


def past_in_place(rows: int, facts: HostFacts) -> int:
    """A row count past the rows R5 reads B in place for, from ``rows`` chosen past the few rows it reads in place
    on any core: where the FMAs issue at half rate it reads B in place up to HALF_RATE_UNPACKED_MAX_ROWS rows, so
    that many more (a multiple of every row tile, so M keeps its remainder)."""
    return rows + (HALF_RATE_UNPACKED_MAX_ROWS if facts.half_rate_fma else 0)
