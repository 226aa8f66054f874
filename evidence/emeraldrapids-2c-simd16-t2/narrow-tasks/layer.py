"""The BERT-base encoder layer with R6's narrow tasks (now) and without them (the rules before: ``NARROW_MAX_ROWS``
set to 0 while that layer is built), interleaved with an A/A copy of the new layer and PyTorch eager. Run from
the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/narrow-tasks/layer.py out.csv SEQ [SEQ ...]
"""
import contextlib
import csv
import importlib
import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import model_config
from matmul.e2e.layer import LayerSpec
from matmul.e2e.profile import build_layer, check_layer
from matmul.e2e.timing import _tvm_candidate, layer_shape, torch_candidate
from matmul.measure.interleave import RoundSettings, time_rounds

decide_module = importlib.import_module("matmul.schedules.rules.decide")


@contextlib.contextmanager
def wide_tasks():
    before = decide_module.NARROW_MAX_ROWS
    decide_module.NARROW_MAX_ROWS = 0
    try:
        yield
    finally:
        decide_module.NARROW_MAX_ROWS = before


facts = host_facts()
rows = []
for n, seq in enumerate(int(s) for s in sys.argv[2:]):
    spec = LayerSpec(model_config("bert-base"), seq, 1)
    shape = layer_shape(spec)
    labels = ["new", "new_aa", "old", "torch"] if n % 2 == 0 else ["old", "new", "new_aa", "torch"]
    cands = []
    for label in labels:
        if label == "torch":
            cands.append(torch_candidate(spec, shape, facts.runtime_threads))
            continue
        with wide_tasks() if label == "old" else contextlib.nullcontext():
            built = build_layer(spec, "rule_based", facts=facts)
        cands.append(_tvm_candidate(built, shape, facts.runtime_threads, check_layer(built), label))
    r = time_rounds(cands, anchor=labels.index("torch"),
                    settings=RoundSettings(min_rounds=12, budget_s=30, ci_width=0.03))
    med = dict(zip(labels, (statistics.median(s) for s in r.samples)))
    row = {"seq": seq, "order": labels[0] + "-first", "new_ms": round(med["new"] * 1e3, 3),
           "old_ms": round(med["old"] * 1e3, 3), "torch_ms": round(med["torch"] * 1e3, 3),
           "aa": round(med["new"] / med["new_aa"], 3), "new_over_old": round(med["old"] / med["new"], 3),
           "new_over_torch": round(med["torch"] / med["new"], 3), "old_over_torch": round(med["torch"] / med["old"], 3),
           "rounds": len(r.samples[0]), "converged": r.converged}
    rows.append(row)
    print(row, flush=True)
    with open(sys.argv[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
