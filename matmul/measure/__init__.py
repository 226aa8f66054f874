"""Layer 3, measurement: timing and thread-pool control, the FP32 peak, vendor references, verified
candidates, the one interleaved timer and everything built on it (paired, agreement, evidence, the template
sweep, compare-db, held-out evaluation). Imports core and schedules only."""
