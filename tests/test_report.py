"""The report on a small real study (studies/smoke.yaml, run once through the real CLI),
plus the placeholder figures a study without the data gets."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from factories import diagnostics, history, numbered, trial_result
from PIL import Image
from rich.console import Console

from models.spec import TrialSpec
from pipeline.analysis import figures as fg
from pipeline.analysis import report as rp
from pipeline.analysis.summary import study_summary
from pipeline.analysis.tables import StudyTables, tables_from_results
from pipeline.analysis.verdicts import VERDICTS, judge
from pipeline.results import load_tables

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_BOOT = 200


@pytest.fixture(scope="module")
def smoke(smoke_study) -> StudyTables:
    """The tables of the session's smoke study (tests/conftest.py), run once for the suite."""
    return load_tables(study="smoke", storage_url=smoke_study.storage_url)


@pytest.fixture(scope="module")
def written(
    smoke: StudyTables, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Path], list]:
    verdicts = judge(smoke, n_boot=N_BOOT)
    files = rp.write_report(smoke, tmp_path_factory.mktemp("report"), verdicts, n_boot=N_BOOT)
    return files, verdicts


@pytest.mark.slow
def test_every_file_is_written_and_every_figure_is_a_png(written) -> None:
    files, _ = written
    assert set(files) == {"markdown", "html", "interactive", "verdicts", *rp.FIGURES}
    assert {"learning_curves", "objective_vs_params"} <= set(rp.FIGURES)
    assert files["verdicts"].name == "verdicts.json"
    for name in rp.FIGURES:
        path = files[name]
        assert path.name == f"{name}.png"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 10_000, f"{name}.png is only {len(data)} bytes"
        with Image.open(path) as image:
            assert all(round(d) >= 150 for d in image.info["dpi"]), (name, image.info["dpi"])
        svg = path.with_suffix(".svg")
        assert svg.is_file() and "<svg" in svg.read_text(encoding="utf-8")[:2000], name
    pngs = sorted(p.stem for p in files["markdown"].parent.glob("*.png"))
    svgs = sorted(p.stem for p in files["markdown"].parent.glob("*.svg"))
    assert pngs == svgs == sorted(rp.FIGURES)
    assert files["markdown"].name == "report.md" and files["html"].name == "report.html"
    assert len({f.parent for f in files.values()}) == 1


@pytest.mark.slow
def test_html_is_self_contained_and_names_every_figure(written) -> None:
    files, _ = written
    text = files["html"].read_text(encoding="utf-8")
    for name in rp.FIGURES:
        assert f'data-file="{name}.png"' in text
        assert f'href="{name}.png"' in text
    assert text.count('src="data:image/png;base64,') == len(rp.FIGURES)
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text, flags=re.IGNORECASE)
    assert refs, "expected image sources and figure links"
    assert not [r for r in refs if r.lower().startswith(("http:", "https:", "//"))]
    assert "<script" not in text.lower()
    assert "<link" not in text.lower() and "@import" not in text


@pytest.mark.slow
def test_markdown_has_the_verdicts_the_tables_and_the_figures(smoke: StudyTables, written) -> None:
    files, verdicts = written
    text = files["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# initstudy report: smoke")
    assert smoke.claim in text
    assert [v.claim_id for v in verdicts] == ["C1", "C4"]  # what this study can measure
    for v in verdicts:
        assert f"| {v.claim_id} |" in text
        assert v.verdict in VERDICTS
        assert f"| {v.verdict} |" in text
    for name in rp.FIGURES:
        assert f"]({name}.png)" in text
    assert "initstudy report smoke" in text
    assert "xavier vs uniform01" in text  # the speedup table
    assert "KM median epochs" in text  # the group summary


@pytest.mark.slow
def test_both_documents_have_the_study_summary(smoke: StudyTables, written) -> None:
    files, _ = written
    best = study_summary(smoke).best_line()
    text = files["markdown"].read_text(encoding="utf-8")
    summary = text[text.index("## Study summary") : text.index("## Figures")]
    assert best in summary
    assert "**epochs_to_converge by init**" in summary and "| xavier | 3 |" in summary
    assert "**Parameter importance (fANOVA)**" in summary and "| init |" in summary
    assert "_left out: seq_len (one value)._" in summary
    assert f"]({rp.SUMMARY_FIGURE}.png)" in summary  # its figure, shown once
    assert text.count(f"]({rp.SUMMARY_FIGURE}.png)") == 1
    page = files["html"].read_text(encoding="utf-8")
    assert "<h2>Study summary</h2>" in page and best in page
    assert page.count(f'data-file="{rp.SUMMARY_FIGURE}.png"') == 1


@pytest.mark.slow
def test_speedup_markdown_has_a_row_per_seq_len(smoke: StudyTables) -> None:
    text = rp.speedup_markdown(smoke)
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    lengths = sorted(smoke.trials["seq_len"].unique())
    seq_col = header.index("seq_len")
    assert sorted(int(r[seq_col]) for r in rows) == lengths  # smoke: one other scheme
    assert all(r[header.index("comparison")] == "xavier vs uniform01" for r in rows)


@pytest.mark.slow
def test_verdict_table_renders_every_claim(written) -> None:
    _, verdicts = written
    console = Console(record=True, width=200)
    console.print(rp.verdict_table(verdicts))
    out = console.export_text()
    for v in verdicts:
        assert v.claim_id in out and v.verdict in out


# --------------------------------------------------------------------------- no data


def only_xavier() -> StudyTables:
    spec = TrialSpec(init="xavier", seq_len=5, max_epochs=4)
    res = trial_result(spec, history([0.2] * 4), diagnostics=diagnostics(5, grad_norm=[0.0] * 5))
    return tables_from_results("lonely", numbered([res], key="k"))


def figure_text(fig) -> str:
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    plt.close(fig)
    return " ".join(texts)


def test_figures_without_the_data_say_so() -> None:
    tables = only_xavier()
    assert "not enough data" in figure_text(fg.speedup_figure(pd.DataFrame()))
    assert "not enough data" in figure_text(fg.grad_norm_figure(tables.steps))  # all zeros
    assert "not enough data" in figure_text(fg.km_figure(tables.trials.iloc[0:0]))
    assert "not enough data" not in figure_text(fg.km_figure(tables.trials))


@pytest.mark.slow  # it renders a whole report: about 2 s of CPU
def test_a_study_without_the_data_still_gets_every_file(tmp_path: Path) -> None:
    tables = only_xavier()
    files = rp.write_report(tables, tmp_path, n_boot=N_BOOT)
    assert set(files) == {"markdown", "html", "interactive", "verdicts", *rp.FIGURES}
    assert files["verdicts"].name == "verdicts.json"
    assert all(files[n].read_bytes().startswith(PNG_SIGNATURE) for n in rp.FIGURES)
    text = files["markdown"].read_text(encoding="utf-8")
    # The section and its figure need Xavier and another scheme (the file is still written).
    assert "Speedup of Xavier" not in text
    # Only Xavier: C1 is the one claim its data can measure, so the only one judged.
    assert "| C1 |" in text and "| C4 |" not in text
    assert "No speedup to show" in rp.speedup_markdown(tables)
    assert "best trial: #0" in text and "_not enough trials: 1 complete, needs 4._" in text


def test_docs_render_the_claim_rules_from_the_registry() -> None:
    """docs/results.md's rules block is exactly what the claim registry renders."""
    from pipeline.analysis.verdicts import CLAIMS, rules_markdown

    text = (Path(__file__).resolve().parent.parent / "docs" / "results.md").read_text()
    assert rules_markdown() in text, "run `python -m pipeline.analysis.verdicts` to regenerate"
    for claim in CLAIMS.values():
        assert claim.rule in text


@pytest.mark.slow  # it renders a whole report: about 2 s of CPU
def test_html_escapes_the_study_text_and_markdown_shows_it_as_text(tmp_path: Path) -> None:
    tables = replace(only_xavier(), claim="<b>x</b> & y", spec_text="name: lonely  # <script>\n")
    files = rp.write_report(tables, tmp_path, n_boot=N_BOOT)
    page = files["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page
    assert "# &lt;script&gt;</code></pre>" in page and "<script" not in page
    assert "<code>initstudy report lonely</code>" in page  # `code` spans in the prose
    text = files["markdown"].read_text(encoding="utf-8")
    assert "- **Claim:** &lt;b>x&lt;/b> & y" in text  # no raw HTML (test_hostile_output.py)
    assert text.endswith("```yaml\nname: lonely  # <script>\n```\n")


@pytest.mark.slow  # it renders a whole report, figures included
def test_the_footer_gives_the_study_efficiency(tmp_path: Path) -> None:
    from pipeline.analysis.efficiency import DriverSession, TrialTiming, study_efficiency

    tables = only_xavier()
    text = rp.write_report(tables, tmp_path / "a", n_boot=N_BOOT)["markdown"].read_text()
    assert "\n---\n" not in text and "efficiency" not in text  # none given: no footer
    # One pack of 2 on 1 slot: the run started at 0, the pack trained 4-14 s, run ended 14.5.
    timings = [TrialTiming(n, 10.0, 2, 1e9 + 4, "h") for n in (0, 1)]
    efficiency = study_efficiency(timings, [DriverSession(1e9, 1e9 + 14.5, slots=1)])
    files = rp.write_report(tables, tmp_path / "b", n_boot=N_BOOT, efficiency=efficiency)
    line = (
        "Wall 14.5 s; training floor 10.0 s (sum of pack training time 10.0 s over 1 pack / "
        "1 slot) + start-up 4.0 s; 1.04x the floor; longest pack 10.0 s."
    )
    assert files["markdown"].read_text(encoding="utf-8").endswith(f"\n---\n\n{line}\n")
    page = files["html"].read_text(encoding="utf-8")
    assert f'<footer><hr><p class="efficiency">{line}</p></footer>' in page
    unrecorded = study_efficiency(timings)  # a study stored by an older initstudy
    files = rp.write_report(tables, tmp_path / "c", n_boot=N_BOOT, efficiency=unrecorded)
    assert (
        files["markdown"]
        .read_text(encoding="utf-8")
        .endswith(
            "\n---\n\nStudy efficiency not measured: no driver runs are recorded (a study "
            "stored by an older initstudy); sum of pack training time 10.0 s over 1 pack.\n"
        )
    )
