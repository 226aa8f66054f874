"""End to end: a Transformer encoder layer in Relax with every matmul scheduled by the suite.

* :mod:`.layer`: the layer (``tvm.relax.frontend.nn``) for a row of ``MODELS``, its weights, its
  lowering, and two references (float64 NumPy, PyTorch eager);
* :mod:`.detect`: which PrimFuncs are matmuls, from their blocks' iteration structure;
* :mod:`.schedule`: the pass that schedules them with a suite variant and fuses their epilogues;
* :mod:`.profile`: build for the VM, check, and time per PrimFunc and per forward pass.
"""
