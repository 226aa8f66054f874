"""The rules' measured constants: bounds, shares and counts, each with the measurement that set it.

:mod:`.config` (the legal configs, the plan) and :mod:`.decide` (the rules) read them; they depend on no
host: every host-dependent figure comes from :class:`~matmul.core.hardware.HostFacts` at decision time.
"""

from __future__ import annotations

from fractions import Fraction

#: Loop orders :func:`apply_config` knows. ``jfirst`` is R8's; ``ifirst``
#: swaps the two micro-tile loops (each row block sweeps all of the B block).
ORDERS = ("jfirst", "ifirst")
#: Aim for at least this many parallel tasks per runtime thread (R7).
TASKS_PER_THREAD = 4
#: Upper bound on micro-panels per task column tile (R6).
MAX_PANELS_PER_TASK = 4
#: R6: where B is packed and each packed panel feeds at most this many rows of A, the copy is a large
#: share of the time, and a task takes at most :data:`NARROW_ROW_BYTES` of each row of B. On the 2-core Emerald
#: Rapids host (AVX-512: j-packs of 48 and 64 floats, 192 and 256 B), one j-pack of 64 or two of 48 read
#: 1.13-1.28x faster than the four of before (768 and 1024 B of a row) at M = 16, 1.05-1.18x at M = 32-96,
#: 1.03-1.05x at 128 and 0.98-1.03x at 160-200 (so not there), never slower at M <= 128 where B fits L3
#: (:data:`NARROW_MAX_L3_SHARE`)
#: (evidence/README.md, "Narrow tasks where packing weighs"). No mechanism is known (one j-pack of 48, 192 B,
#: reads no faster; nor does packing each j-pack just before its use), so the bound is a measured one. Four
#: j-packs of AVX2's 24 floats are 384 B: Zen 3's 24-wide tiles are as before.
NARROW_MAX_ROWS = 128
#: R6: bytes of each row of B a task takes where packing weighs (:data:`NARROW_MAX_ROWS`); at least one j-pack.
NARROW_ROW_BYTES = 384
#: R6: the narrow tasks only where B fits in this share of L3. Where B streams from DRAM, a strip of 256 B of
#: each row is too short: ALBERT-xxlarge's 268 MB MLP weights (rows 64 KiB apart) read 0.52x, 0.69x and 0.81x
#: with it at 7 x 4096 x 16384, 77 x 4096 x 16384 and 77 x 16384 x 4096 (evidence/README.md). R12 reads the same
#: share: a GEMV whose B exceeds it streams B from memory one vector across j, which on Zen 4 read 1.09-1.57x
#: R2's four on weights of 25-256 MiB and 0.91-1.03x on 1-16 MiB ones, which stay in L3 (evidence/README.md).
NARROW_MAX_L3_SHARE = Fraction(1, 2)
#: Share of L1 the packed B micro-panel may fill (R4). Half of L1 (TK=128 on
#: AVX2) and 3/4 (TK=256) differ by 3-4% in two paired runs, in favour of 3/4.
L1_SHARE_NUM, L1_SHARE_DEN = 3, 4
#: R2: the register tile may pad M by at most this share of the padded rows
#: (one row in eight). Beyond it a tile with fewer accumulators and less
#: padding wins: at M = 7 on AVX-512 six rows pad to 12 and waste 5/12 of the
#: FMAs (evidence/README.md, "Padding in the register tile").
PAD_ROWS_MAX = Fraction(1, 8)
#: R2: a register tile that leaves M unpadded wins over one with more accumulators that pads it, if it keeps
#: at least this share of the vector registers as accumulators. Padded rows cost a parallel copy of A per call
#: (and a pass over the rows): at 128 x 512 x 512 on Emerald Rapids, 6 x 4 vectors padding M to 132 read 1.15x
#: slower than 4 x 4 at M = 128 (both storing C from the write-back), while at M = 132 (no padding) the two
#: tiles ran alike (1.02x), as at M = 384 (1.00x) (evidence/README.md, "Padded rows").
UNPADDED_MIN_ACC = Fraction(1, 2)
#: R2: independent accumulator chains two FMA pipes of 4-cycle latency keep busy (every x86 core this suite has
#: met: Zen 3-5, Rocket Lake, Emerald Rapids). A tile that leaves M unpadded must also have more than these: with
#: exactly 8 nothing hides a late load. For the AVX2 target on the Emerald Rapids host, 2 rows x 4 vectors
#: (8 accumulators) read 0.90-0.93x the 6 x 2 (12) that pads M = 64 and 128, while 5 x 2 (10) read 0.99x it at
#: M = 200 and 3 x 3 (9) 1.01-1.04x 4 x 3 at M = 33.
FMA_CHAINS = 8
#: Knobs that take positive integers.
INT_KNOBS = ("tm", "tn", "tk", "mr", "jpack", "vector", "writeback", "unroll", "kparts")
#: Default explicit unroll step of the ki loop (R9).
UNROLL_STEP = 4
#: R12: up to this many rows a matmul takes the GEMV path. Each B element
#: then feeds at most this many FMAs, so memory bounds it: on the 2-core
#: AVX-512 host LLaMA-2-7B's QKV ran 1.9-2.1x faster than the GEMM tiles at
#: M = 1, 2 and 4, and no faster at M = 8 (evidence/README.md).
GEMV_MAX_ROWS = 4
#: R12: rows of B read side by side (TK) in the GEMV path: one sequential
#: stream each for the hardware prefetcher, 8 of the 16-32 streams x86 cores
#: track. 8 beat 4 and 32 by 7-9% on a DRAM-bound GEMV.
GEMV_STREAMS = 8
#: R12 beyond the GEMV: a matmul of more than :data:`GEMV_MAX_ROWS` and at most this many rows, whose B exceeds
#: :data:`NARROW_MAX_L3_SHARE` of L3 and whose register tile leaves two or more row blocks, streams B as the GEMV
#: does: TK = :data:`GEMV_STREAMS`, one column range per thread, B in place, all rows in each task (the row blocks
#: reuse each block of TK rows from L1), where R5 packed B in tasks of 512 B of each row, every row a new page. On
#: Zen 3 (AVX2's 2 x 4 tile: four row blocks at M = 7), on the 7 model rows at M = 7 whose weights (25-256 MiB)
#: exceed 16 MiB, against the old config side by side: 1.10-1.69x, geomean 1.35x, every interval above 1 (A/A
#: 0.93-1.12x), and 1.01-1.59x on four of them at M = 8; NumPy 1.25-1.92x where LLaMA-2-7B's MLP reduce had read
#: 0.91x. At M = 16 the same streaming read 0.73-1.37x and at 32 0.46-0.84x: not there
#: (evidence/znver3-2c-simd8-t2/eighteenth/r12-streamed/).
STREAM_MAX_ROWS = 8
#: R13: the fewest k iterations a part of a split K loop must keep. A split
#: costs a second parallel region and a pass over the partial sums, a few
#: microseconds on 2 cores: at M = 1 and 4, N = 16 and 64, K = 768-6144 on the
#: AVX-512 host, splitting K in two read 0.44-0.91x when each part had at most
#: 1536 iterations and 1.10-1.49x from 3072 up (evidence/README.md, R13).
KPART_MIN_K = 2048
#: R5: B reused by at most this many rows is read in place (not packed) unless its rows lie a whole number of
#: pages apart. In the shipped sweeps, not packing at M = 16 read 1.24-1.63x faster at qkv and 1.01-1.30x at
#: mlp_reduce on all four profiles (Zen 3, Rocket Lake, Zen 4, Emerald Rapids); at M = 32 and 64 the four
#: split (0.67-1.30x).
UNPACKED_MAX_ROWS = 16
#: R5 where the widest FMAs issue at half rate (``HostFacts.half_rate_fma``: Zen 4's AVX-512 on 256-bit units):
#: B reused by at most this many rows is read in place, its rows whole pages apart or not. Each FMA there takes
#: twice the cycles, which the loads of a B read in place fill. On Zen 4, B in place against R5's packing, side
#: by side with an A/A copy (evidence/znver4-2c-simd16-t2/r5-unpacked/ and r5-half-rate/): 1.06-1.44x at
#: M = 16-64 (mlp_expand at M = 32 level), 1.03-1.14x at M = 96-192 (7 of 9 intervals above 1), level at 256 and
#: 384 (0.98-1.03x); on the three profiles with full-rate FMAs packing led from M = 32 (0.45-1.02x in place).
HALF_RATE_UNPACKED_MAX_ROWS = 192
#: R4 where the FMAs issue at half rate and B is a constant packed once (a model's weight), or from
#: :data:`HALF_RATE_L2_TK_MIN_ROWS` rows: the TK x j-pack panel within this share of L2 instead of 3/4 of L1
#: (TK 384-512 where L1 gives 64-128). On Zen 4, NT with weights packed once, TK = 384 read 1.02-1.07x the
#: L1-sized TK on 8 BERT shapes at M = 32-384 and 512-1024 the same again where they divide K
#: (evidence/znver4-2c-simd16-t2/prepacked-tk/).
L2_PANEL_SHARE = Fraction(1, 8)
#: R4 where the FMAs issue at half rate: from this many rows of A (one matrix, not a batch of slices), TK comes
#: from :data:`L2_PANEL_SHARE` of L2 too, B packed per call or read in place. On Zen 4, TK = 320-512 against
#: the L1-sized 64-128, side by side with an A/A copy, on the 9 BERT shapes at M = 192-384 and the 23 model rows
#: at M = 200 it moves: 31 of 32 faster, 0.99-1.08x, 22 intervals above 1, none below. At M = 96 and 128 four runs
#: read 0.92-1.07x (qkv at 96 above 1 in each, the other shapes on both sides), so not there
#: (evidence/znver4-2c-simd16-t2/tall-tk/).
HALF_RATE_L2_TK_MIN_ROWS = 192
#: R5: rows of B this many bytes apart (or a multiple) keep their packing at any M: the prefetchers stop at a
#: page, and on a virtually indexed L1 of one page per way every row lands in the same sets. mlp_expand's
#: 3072-float rows (3 pages) read 0.77x and 0.89x unpacked at M = 16 on Zen 3 and Emerald Rapids.
PAGE_BYTES = 4096
#: Bytes of a cache line: the stride of R14's prefetches (64 on every x86-64 core and most Arm cores).
LINE_BYTES = 64
#: R14 spreads a block's prefetches over its row tiles and needs at least this many of them. Measured on Zen 4
#: (``evidence/README.md``): BERT-base's MLP expand read 0.91-0.94x the time with the prefetch at M = 64-128
#: (8-16 tiles), about the same at M = 32 (4) and 1.02x slower at M = 16 (2 tiles, 192 prefetches each).
PREFETCH_MIN_TILES = 8
#: R14 prefetches only a B larger than this share of L3 (from memory, not cache). On Zen 4 (32 MiB L3) B of 9-256
#: MiB read 0.92-1.17x, geomean 1.075x, faster with the prefetch, B of 4-6.2 MiB (BERT-large's QKV, t5-small's MLP
#: expand, ViT-huge's QKV) 0.95-1.02x, geomean 0.987x (``evidence/znver4-2c-simd16-t2/prefetch/domain.csv``), and
#: B of 6.5-8 MiB (12 shapes of no model, two runs) geomean 1.026x and 1.007x, 11 of 24 intervals above 1 and none
#: below (``prefetch/gap.csv``, ``gap-repeat.csv``): so from a fifth (6.4 MiB there), not a quarter.
PREFETCH_MIN_L3_SHARE = Fraction(1, 5)
