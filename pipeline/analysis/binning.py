"""Curve and panel labels for figures of sampled designs: continuous parameters binned.

A grid study gives each scheme a handful of values per parameter; a sampled one (TPE,
random, QMC) gives every trial its own scale or hidden size, so one curve per value draws
dozens of curves of one trial each. :func:`curve_labels` names each trial's curve by its
scheme and, where they vary, its scale and hidden size, binned (quantile bins, at most
:data:`MAX_BINS`) so that a panel has at most :data:`MAX_LEGEND` curves where the schemes
allow it; a parameter left with one bin is pooled, and said. :func:`panel_labels` does the
same for the panels (seq_len). This module is pure pandas.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["MAX_BINS", "MAX_LEGEND", "MAX_PANELS", "bin_labels", "curve_labels", "panel_labels"]

MAX_BINS = 5
"""A numeric parameter with more distinct values than this is drawn in quantile bins."""
MAX_LEGEND = 10
"""The most curves (legend entries) a panel should get; bins are merged to stay under it."""
MAX_PANELS = 6
"""A panel parameter (seq_len) with more distinct values than this is binned into
:data:`MAX_BINS` panels."""
CURVE_PARAMS: tuple[tuple[str, str], ...] = (("scale", " x"), ("hidden", ", h="))
"""The parameters that split a scheme's curve, with the text before their value."""


def _text(x: float) -> str:
    return f"{x:.3g}"


def bin_labels(values: pd.Series, bins: int) -> pd.Series:
    """Each value as text, or, with more than ``bins`` distinct values, its quantile bin as
    ``"low-high"`` (the smallest and largest value in it). NaN stays NaN."""
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    distinct = np.unique(numeric.dropna())
    if distinct.size <= bins:
        return numeric.map(lambda v: math.nan if math.isnan(v) else f"{v:g}").astype(object)
    codes = pd.qcut(numeric, q=bins, labels=False, duplicates="drop")
    spans = numeric.groupby(codes).agg(["min", "max"])
    names = {
        code: _text(row["min"])
        if row["min"] == row["max"]
        else f"{_text(row['min'])}-{_text(row['max'])}"
        for code, row in spans.iterrows()
    }
    return codes.map(names).astype(object)


def curve_labels(frame: pd.DataFrame, schemes: pd.Series) -> tuple[pd.Series, list[str]]:
    """A curve label per row: its scheme (``schemes``), then its scale and hidden size where
    they vary, binned so that at most :data:`MAX_LEGEND` labels result where the schemes
    allow it (the parameter with the most bins loses one at a time).

    Returns:
        ``(labels, pooled)``: the labels, and the varying parameters left out (pooled).
    """
    varying = [(n, p) for n, p in CURVE_PARAMS if n in frame and frame[n].nunique() > 1]
    bins = {n: min(int(frame[n].nunique()), MAX_BINS) for n, _ in varying}
    n_schemes = max(int(schemes.nunique()), 1)
    while bins and n_schemes * math.prod(bins.values()) > MAX_LEGEND:
        widest = max(bins, key=bins.__getitem__)
        if bins[widest] <= 1:
            break
        bins[widest] -= 1
    labels = schemes.astype(str)
    pooled = []
    for name, prefix in varying:
        if bins[name] <= 1:
            pooled.append(name)
            continue
        labels = labels + prefix + bin_labels(frame[name], bins[name]).astype(str)
    return labels, pooled


def panel_labels(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """A panel per value, or per quantile bin with more than :data:`MAX_PANELS` values.

    Returns:
        ``(labels, order)``: each row's panel, and the panels in increasing order.
    """
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    bins = MAX_PANELS if numeric.nunique() <= MAX_PANELS else MAX_BINS
    labels = bin_labels(numeric, bins)
    order = numeric.groupby(labels).min().sort_values().index.astype(str).tolist()
    return labels.astype(str), order
