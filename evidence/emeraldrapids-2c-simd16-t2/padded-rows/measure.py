"""Padded rows: the rules before (R2's tile with the most accumulators, padding M by up to 1/8, and a parallel
copy of C's padded rows out after the kernel) and now (a tile that leaves M unpadded where its accumulators
fill half the registers; where only M grew, the write-back stores C's own rows), interleaved with an A/A copy
of the new kernel, the old tile with the new write-back (``old_tile``), and NumPy. The build order alternates
from one shape to the next. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/padded-rows/measure.py old-configs.json out.csv

``old-configs.json`` holds, per ``LAYOUT:MxKxN``, the config the rules chose before the change (`decide` at its
parent commit), built as ``rule_based[...]`` with every knob pinned; for ``old`` the C copy is put back by
turning :meth:`Schedule.reverse_compute_inline` of the ``C_pad`` block into the parallel copy it replaced.
"""
import contextlib
import csv
import importlib
import json
import statistics
import sys

from tvm.s_tir import Schedule

from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.schedules.rules import decide

apply_module = importlib.import_module("matmul.schedules.rules.apply")


@contextlib.contextmanager
def copy_out():
    inline = Schedule.reverse_compute_inline

    def copy(sch, block):
        if sch.get(block).name_hint.endswith("_pad"):
            return apply_module._parallel_copy(sch, block)
        return inline(sch, block)

    Schedule.reverse_compute_inline = copy
    try:
        yield
    finally:
        Schedule.reverse_compute_inline = inline


def pinned_name(config: dict) -> str:
    knobs = {k: ("on" if v else "off") if k == "pack_b" else v for k, v in config.items()}
    return "rule_based[" + ",".join(f"{k}={v}" for k, v in knobs.items()) + "]"


old_configs = json.load(open(sys.argv[1]))
facts = host_facts()
rows = []
for n, (key, old) in enumerate(old_configs.items()):
    layout, spec = key.split(":")
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    new = decide(shape, facts, layout=layout).config
    name = pinned_name(old)
    pinned = decide(shape, facts, layout=layout, overrides={k: v for k, v in old.items()}).config
    assert pinned.as_dict() == old, f"{key}: {name} is not the old config"
    labels = ["new", "new_aa", "old", "old_tile", "numpy"] if n % 2 == 0 else ["old", "old_tile", "new", "new_aa",
                                                                                "numpy"]
    cands = []
    for label in labels:
        variant = {"old": name, "old_tile": name, "numpy": "numpy"}.get(label, "rule_based")
        with copy_out() if label == "old" else contextlib.nullcontext():
            cands.append(prepare(variant, shape, layout=layout, fresh=label != "numpy"))
    r = time_rounds(cands, anchor=labels.index("numpy"),
                    settings=RoundSettings(min_rounds=12, budget_s=20, ci_width=0.03))
    med = dict(zip(labels, (statistics.median(s) for s in r.samples)))
    row = {"layout": layout, "shape": spec, "order": labels[0] + "-first",
           "new_tile": f"{new.mr}x{new.jpack // new.vector} tm={new.tm}",
           "old_tile": f"{old['mr']}x{old['jpack'] // old['vector']} tm={old['tm']}",
           "new_ms": round(med["new"] * 1e3, 4), "old_ms": round(med["old"] * 1e3, 4),
           "old_tile_ms": round(med["old_tile"] * 1e3, 4), "numpy_ms": round(med["numpy"] * 1e3, 4),
           "aa": round(med["new"] / med["new_aa"], 3), "new_over_old": round(med["old"] / med["new"], 3),
           "write_back_over_copy": round(med["old"] / med["old_tile"], 3),
           "new_over_numpy": round(med["numpy"] / med["new"], 3), "old_over_numpy": round(med["numpy"] / med["old"], 3),
           "new_gflops": round(2 * M * K * N / med["new"] / 1e9, 1), "rounds": len(r.samples[0]),
           "converged": r.converged}
    rows.append(row)
    print(row, flush=True)
    with open(sys.argv[2], "w", newline="") as f:  # after every group: a later failure keeps these
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
