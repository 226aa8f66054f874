#!/bin/bash
# Issue 16's model rows on this profile after R12's streamed rows: rule_based and NumPy interleaved, per model.
cd /work/main
for m in llama2-7b albert-xxlarge vit-huge; do
  .venv/bin/pytest bench/test_matmul_bench.py --model $m --m-values 1,7,77,200 --variants rule_based,numpy \
    --e2e-models none --benchmark-json evidence/znver3-2c-simd8-t2/eighteenth/model-rows/rows18-$m.json -q > /tmp/rows/$m.log 2>&1
done
echo DONE
