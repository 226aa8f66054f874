"""Layer 1, the core: hardware facts, workloads, the canonical kernel, verification, compile and run,
the variant registry, file and provenance helpers. Imports nothing above it."""
