"""Statistics of epochs-to-convergence: Kaplan-Meier medians, speedups, power.

Epochs-to-convergence is a time-to-event measurement. A trial's **duration** is its
converged epoch if it converged (before any divergence), else its ``max_epochs``; its
**event** is "converged". Trials that diverged or never reached the target are censored
at the budget: we know only that they needed more than ``max_epochs`` epochs. So

- medians are Kaplan-Meier medians (``scipy.stats.ecdf`` on right-censored data) with
  a confidence interval read off the KM log-log confidence band, and a median that the
  curve never reaches is reported as "> budget", never as a number
  (:mod:`pipeline.analysis.survival`);
- a speedup of scheme A over scheme B is ``median_B / median_A`` with a bootstrap
  interval; when B's median is not reached the speedup is only a lower bound, and the
  number to quote is the interval's lower limit (:attr:`Speedup.lo`, "at least lo")
  (:mod:`pipeline.analysis.speedups`);
- a paired comparison uses the replicate seeds (members of a pack share one data
  stream, so A and B with the same seed saw the same batches) and keeps every pair: an
  exact sign test on which scheme converged first, plus the geometric mean of per-seed
  ratios over the pairs where both converged (labelled so), with a t-interval
  (:mod:`pipeline.analysis.paired`);
- per cell of a ``trials`` table, outcome summaries and speedup tables
  (:mod:`pipeline.analysis.cells`);
- a power estimate simulates studies of n seeds from the pilot's trials, censoring
  included, and runs the table's own speedup estimator on them
  (:mod:`pipeline.analysis.power`).

Device types are never pooled: every table here groups by ``device_type`` as well. This
module gathers the public names of those modules; like them, it is pure
numpy/scipy/pandas and knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

from pipeline.analysis.cells import SPEEDUP_COLUMNS, SUMMARY_COLUMNS, group_summary, speedup_table
from pipeline.analysis.paired import PairedComparison, paired_comparison
from pipeline.analysis.power import MIN_PILOT, POWER_CELL_COLUMNS, power_estimate
from pipeline.analysis.speedups import Speedup, SpeedupKind, speedup
from pipeline.analysis.survival import KMMedian, km_curve, km_median, time_to_event

__all__ = [
    "MIN_PILOT",
    "POWER_CELL_COLUMNS",
    "SPEEDUP_COLUMNS",
    "SUMMARY_COLUMNS",
    "KMMedian",
    "PairedComparison",
    "Speedup",
    "SpeedupKind",
    "group_summary",
    "km_curve",
    "km_median",
    "paired_comparison",
    "power_estimate",
    "speedup",
    "speedup_table",
    "time_to_event",
]
