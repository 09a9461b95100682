"""The science: tables of results in, statistics, verdicts, a report and figures out.

Nothing here imports Optuna, Ray or MLflow (a lint rule enforces it): the analysis reads
the tables that :mod:`pipeline.results` builds from the stores, so it can be read, tested
and changed without any outside system.
"""
