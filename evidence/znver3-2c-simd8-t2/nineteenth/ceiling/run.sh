#!/bin/bash
# The register tile's loop on L1-resident data, then whole kernels, each beside the peak probe in the same rounds.
# Run from the repository root; writes results.txt here. Twice each: the machine's state moves between runs.
d=evidence/znver3-2c-simd8-t2/nineteenth/ceiling
py=".venv/bin/python $d/ceiling.py"
{
  for n in 1 2; do
    $py loop
    $py kernels 384x768x768,384x768x3072,384x3072x768,128x768x768,128x768x3072,128x3072x768,1536x1536x1536,768x3072x3072 'rule_based;rule_based_prepacked;numpy'
    $py kernels 16x768x768,16x768x3072,16x3072x768,64x768x3072 'rule_based;rule_based_prepacked;numpy'
  done
} 2>&1 | grep -v Warning | tee $d/results.txt
