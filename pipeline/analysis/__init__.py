"""The science: tables of results in, statistics, verdicts, a report and figures out.

Nothing here imports Optuna, Ray or MLflow (a lint rule enforces it): the analysis builds
its tables from TrialResults in hand (:mod:`pipeline.analysis.tables`; reading them from a
study's store is :mod:`pipeline.results`), so it can be read, tested and changed without
any outside system. The one exception is borrowed, not imported: the report asks
:func:`pipeline.results.param_importances` for Optuna's parameter importances.
"""
