"""The report's interactive page (pipeline.analysis.interactive): Optuna's plots of a
sampled study with plotly.js inline, opened in headless Chromium with no network.

Screenshots land in ``test-artifacts/interactive/`` at the repository root."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from test_aft import sampled_study, study, trial
from test_ui import CHROMIUM, CHROMIUM_ARGS, assert_png, browser_or_skip

from pipeline.analysis.interactive import INTERACTIVE_FILE, json_for_script, write_interactive
from pipeline.analysis.tables import StudyTables
from pipeline.optuna_plots import PLOTS
from pipeline.publish import report_files

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "interactive"


@pytest.fixture(scope="module")
def sampled() -> StudyTables:
    return sampled_study(4.0)


@pytest.fixture(scope="module")
def page(sampled: StudyTables, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_interactive(sampled, tmp_path_factory.mktemp("interactive"))
    return path


def figures_of(text: str) -> dict[str, dict]:
    found = re.findall(r'<script type="application/json" id="([a-z_]+)-json">(.*?)</script>',
                       text, flags=re.S)  # fmt: skip
    return {name: json.loads(body) for name, body in found}


def test_the_page_has_every_plot_of_the_searched_parameters(
    sampled: StudyTables, page: Path
) -> None:
    text = page.read_text(encoding="utf-8")
    figures = figures_of(text)
    assert list(figures) == list(PLOTS)  # parallel coordinates, slice, contour, importances
    axes = figures["parallel_coordinate"]["layout"]["xaxis"]["ticktext"]
    assert axes[0] == "epochs_to_converge"  # the objective, by its name
    assert {"init", "lr", "scale"} <= set(axes) and not {"seed", "data_seed"} & set(axes)
    bars = figures["param_importances"]["data"][0]["y"]
    assert {"init", "lr", "scale"} <= set(bars) and not {"seed", "data_seed"} & set(bars)
    assert text.count('class="plotly-view"') == len(PLOTS)


def test_the_page_works_offline_and_runs_only_its_own_scripts(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js is inline
    assert text.count("<script>") == 2  # plotly.js, then the code that draws the plots
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # the page, not the library
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', markup, flags=re.IGNORECASE)
    assert not refs, refs  # no script, style or image fetched from anywhere (and the
    # browser test below sees no request leave the page)
    assert "<link" not in markup.lower() and "cdn.plot.ly" not in markup


def test_spec_text_cannot_end_a_script_element() -> None:
    hostile = '{"a": "</script><script>alert(1)</script> & \u2028"}'
    safe = str(json_for_script(hostile))
    assert "<" not in safe and ">" not in safe and "&" not in safe and "\u2028" not in safe
    assert json.loads(safe) == json.loads(hostile)


def test_a_study_too_small_to_plot_gets_a_note_per_plot(tmp_path: Path) -> None:
    tables = study([trial("xavier", 3, seed=0)], "name: tiny\n")
    tables = replace(tables, study="<b>tiny</b>")
    path, section = write_interactive(tables, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert section.titles == [] and len(section.notes) == len(PLOTS)
    assert all("not drawn: 1 complete trial(s), needs 2" in n for n in section.notes)
    assert "<script" not in text  # no plot: no library either
    assert "&lt;b&gt;tiny&lt;/b&gt;" in text and "<b>tiny" not in text


@pytest.mark.slow
def test_the_report_frames_and_links_the_page_and_uploads_it(
    sampled: StudyTables, tmp_path: Path
) -> None:
    from pipeline.analysis.report import write_report

    files = write_report(sampled, tmp_path, n_boot=50)
    assert files["interactive"] == tmp_path / INTERACTIVE_FILE
    assert files["interactive"] in report_files(files)  # it goes to MLflow with the rest
    html = files["html"].read_text(encoding="utf-8")
    assert f'<iframe class="interactive" src="{INTERACTIVE_FILE}"' in html
    assert "<script" not in html.lower()  # report.html itself stays script-free
    md = files["markdown"].read_text(encoding="utf-8")
    assert f"[{INTERACTIVE_FILE}]({INTERACTIVE_FILE})" in md and "- Parameter importances" in md


@pytest.mark.slow
def test_the_page_renders_every_plot_in_chromium_with_no_network(page: Path) -> None:
    sync_api = browser_or_skip()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    (page.parent / "report.html").write_text(
        f'<!DOCTYPE html><html><body><iframe src="{INTERACTIVE_FILE}" '
        'style="width:100%;height:900px"></iframe></body></html>',
        encoding="utf-8",
    )
    viewport = {"width": 1400, "height": 1000}
    fetched: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport=viewport, offline=True)
        context.route(
            re.compile(r"^(?!file:).*"),
            lambda route: (fetched.append(route.request.url), route.abort()),
        )
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            tab.goto(page.resolve().as_uri())
            for name in PLOTS:
                # plotly draws each figure into an <svg class="main-svg"> inside its div
                tab.locator(f"#{name} svg.main-svg").first.wait_for(state="attached")
            assert tab.locator("div.plotly-view.js-plotly-plot").count() == len(PLOTS)
            # every searched parameter is an axis of the parallel-coordinate plot
            ticks = tab.locator("#parallel_coordinate .xtick text")
            axes = ticks.evaluate_all("els => els.map(e => e.textContent)")
            assert {"init", "lr", "scale"} <= set(axes), axes
            tab.screenshot(path=SCREENSHOTS / "interactive.png")
            tab.screenshot(path=SCREENSHOTS / "interactive-full.png", full_page=True)
            for name in ("parallel_coordinate", "contour"):
                tab.locator(f"#{name}").screenshot(path=SCREENSHOTS / f"{name}.png")
            # the same page framed in a report (as report.html frames it) draws too
            tab.goto((page.parent / "report.html").resolve().as_uri())
            frame = tab.frame_locator("iframe")
            frame.locator("#slice svg.main-svg").first.wait_for(state="attached")
            tab.screenshot(path=SCREENSHOTS / "framed.png")
        except Exception:
            tab.screenshot(path=SCREENSHOTS / "failure.png")
            raise
        finally:
            browser.close()
    assert not errors, errors
    assert not fetched, f"the page asked the network for {fetched}"
    assert_png(SCREENSHOTS / "interactive.png", viewport["width"], viewport["height"])
    assert_png(SCREENSHOTS / "parallel_coordinate.png", 400, 300, 10_000)
    assert_png(SCREENSHOTS / "contour.png", 400, 300, 10_000)
    assert_png(SCREENSHOTS / "framed.png", viewport["width"], viewport["height"])
