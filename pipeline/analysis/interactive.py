"""The report's interactive page: Optuna's plots of a sampled study, offline.

:func:`write_interactive` writes ``interactive.html`` beside ``report.html``: Optuna's
parallel-coordinate, slice, contour and importance plots
(:func:`pipeline.optuna_plots.interactive_plots`) with plotly.js inlined, so the page
opens with no network (no CDN, no other file). ``report.html`` itself stays free of
scripts: it shows this page in an ``<iframe>`` and links to it. The page is a Jinja2
template (``templates/interactive.html``, autoescaped); each figure's JSON sits in a
``<script type="application/json">`` element with ``<``, ``>`` and ``&`` escaped, so no
text from a spec can end the element.

This module imports nothing of Optuna: the plots come from the store-side module
:mod:`pipeline.optuna_plots`, imported when the page is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from markupsafe import Markup

from pipeline.safeout import replace_file

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables
    from pipeline.results import Importances

__all__ = ["INTERACTIVE_FILE", "InteractiveSection", "json_for_script", "write_interactive"]

INTERACTIVE_FILE = "interactive.html"


@dataclass(frozen=True)
class InteractiveSection:
    """What the report says of the interactive page: its file, the plots it has, notes."""

    file: str
    titles: list[str]
    notes: list[str]


def json_for_script(text: str) -> Markup:
    """JSON text made safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as JSON
    escapes (the same value to a JSON parser), so nothing in it can close the element."""
    escaped = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(escaped.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def write_interactive(
    tables: StudyTables, out_dir: Path, importances: Importances | None = None
) -> tuple[Path, InteractiveSection]:
    """Write ``interactive.html`` into ``out_dir``; return its path and the report's section.
    Always written: without plots it says why each is missing. ``importances`` (the
    report's) are drawn as they are; without them they are computed here."""
    from pipeline.optuna_plots import interactive_plots, plotly_js

    views = interactive_plots(tables, None if importances is None else importances.values)
    script = plotly_js().replace("</script", "<\\/script")  # cannot end its element
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    page = env.get_template(INTERACTIVE_FILE).render(
        study=tables.study,
        objective=views.objective,
        plots=[(name, title, json_for_script(j)) for name, title, j in views.plots],
        notes=views.notes,
        plotly_js=Markup(script) if views.plots else Markup(""),
    )
    path = replace_file(Path(out_dir) / INTERACTIVE_FILE, page)
    return path, InteractiveSection(
        INTERACTIVE_FILE, [title for _, title, _ in views.plots], views.notes
    )
