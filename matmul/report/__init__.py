"""Read saved pytest-benchmark runs of ``bench/`` and turn them into tables and plots.

* :mod:`.load`: run files -> one long table of cases;
* :mod:`.tables`: latency, speedups, geometric means, agreement and the
  comparison across runs;
* :mod:`.render`: text, CSV/Markdown files and PNG plots.

Every figure comes from a run's own saved statistics; nothing is re-measured
here. Family names come from the run itself (``extra_info["family"]``).
"""

from ..core.store import atomic_write
from ..core.tables import geomean, to_markdown
from ..measure.agreement import AGREEMENT_TOLERANCE
from .load import KEY, STORAGE, ReportError, find_runs, load_run, load_runs
from .render import plot_report, to_text, write_report
from .tables import (
    CV_THRESHOLD,
    REGRESSION_THRESHOLD,
    Report,
    agreement_summary,
    agreement_table,
    build_report,
    compare_runs,
    geomean_table,
    latency_table,
    speedup_table,
)

__all__ = [
    "AGREEMENT_TOLERANCE", "CV_THRESHOLD", "KEY", "REGRESSION_THRESHOLD", "STORAGE", "Report", "ReportError",
    "agreement_summary", "agreement_table", "atomic_write", "build_report", "compare_runs", "find_runs", "geomean",
    "geomean_table", "latency_table", "load_run", "load_runs", "plot_report", "speedup_table", "to_markdown",
    "to_text", "write_report",
]
