#!/bin/bash
# A: the old rules' config pinned; B: the new rules. Then the A/A pair (new twice) and the new rules against NumPy.
cd /work/main
out=evidence/znver3-2c-simd8-t2/eighteenth/r12-streamed
grep "^7 " evidence/znver3-2c-simd8-t2/eighteenth/r12-streamed/old-configs.txt | while read M K N cfg; do
  tag=${M}x${K}x${N}
  .venv/bin/python -m matmul paired "rule_based[$cfg]" rule_based --shape $M $K $N --blocks 8 --csv $out/ab-$tag.csv > $out/ab-$tag.log 2>&1
  .venv/bin/python -m matmul paired rule_based rule_based --shape $M $K $N --blocks 8 --csv $out/aa-$tag.csv > $out/aa-$tag.log 2>&1
  .venv/bin/python -m matmul paired numpy rule_based --shape $M $K $N --blocks 8 --csv $out/np-$tag.csv > $out/np-$tag.log 2>&1
done
echo DONE
