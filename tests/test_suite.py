"""``initstudy suite``: the reproduction suite's command, at a tiny budget, and the
committed results it wrote (``docs/results/``, the README's results section)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Done

from pipeline.analysis.judging import Verdict
from pipeline.analysis.reproduction_rule import REPRODUCTION_RULE
from pipeline.analysis.suite_report import (
    README_BEGIN,
    README_END,
    SuiteStudy,
    readme_block,
    write_suite_report,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "suite_tiny"
RESULTS = ROOT / "docs" / "results"


@pytest.fixture
def suite(cli_here: Callable[..., Done]) -> Callable[..., Done]:
    """``initstudy suite ARGS`` in this process."""
    return lambda *args: cli_here("suite", *args)


@pytest.mark.slow
def test_the_tiny_suite_runs_every_file_and_writes_one_report(
    tmp_path: Path, suite: Callable[..., Done], in_process_executor: list[Any]
) -> None:
    # the suite's logic, on the real driver and stores; packs train in this process
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n", encoding="utf-8")
    out = tmp_path / "results"
    args = [
        str(TINY),
        "--run-dir",
        str(tmp_path / "runs"),
        "--out",
        str(out),
        "--readme",
        str(readme),
    ]
    done = suite(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "study 1/2" in done.stdout and "study 2/2" in done.stdout
    assert len(in_process_executor) == 3  # tiny_order, then both stages of tiny_tuned

    records = json.loads((out / "verdicts.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == ["C4", "tiny_r"]  # claims first, then papers
    by_id = {r["id"]: r for r in records}
    assert set(by_id) == {"tiny_r", "C4"}
    assert by_id["tiny_r"]["study"] == "tiny_order" and by_id["tiny_r"]["kind"] == "reproduction"
    assert by_id["tiny_r"]["verdict"] in ("reproduced", "not reproduced")
    assert by_id["C4"]["study"] == "tiny_tuned"
    # each verdict carries its study's protocol; C4's evidence is the map across them
    assert by_id["C4"]["conditions"]["optimizer"] == "adam"
    assert by_id["tiny_r"]["conditions"]["task"] == "adding"
    assert by_id["C4"]["evidence"].startswith("Across ")
    run = json.loads((out / "suite.json").read_text(encoding="utf-8"))
    assert run["cpus"] == os.cpu_count() and "CPU cores" in run["machine"]
    walls = {s["study"]: s["wall_seconds"] for s in run["studies"]}
    assert set(walls) == {"tiny_order", "tiny_tuned"} and min(walls.values()) > 0
    page = (out / "report.md").read_text(encoding="utf-8")
    assert "## Claims" in page and "## Published results" in page and "tiny_r" in page
    for study in ("tiny_order", "tiny_tuned"):
        assert (out / study / "report.md").is_file() and (out / study / "verdicts.json").is_file()
        # no 4.7 MB of plotly.js per study in a committed folder; `report` writes the page
        assert not (out / study / "interactive.html").exists()
        assert "interactive.html" not in (out / study / "report.html").read_text("utf-8")
    tuned = (out / "tiny_tuned" / "report.md").read_text(encoding="utf-8")
    assert "## Tuned learning rate" in tuned and "![tuning_curve](tuning_curve.png)" in tuned
    assert (out / "tiny_tuned" / "tuning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "tiny_order" / "tuning_curve.png").exists()  # not a tuned study

    text = readme.read_text(encoding="utf-8")
    assert "\nold\n" not in text and text.endswith("after\n")
    assert f"**{by_id['tiny_r']['verdict']}**" in text and "results/report.md" in text
    assert "In short: the headline claim C4" in text and "under adam on adding" in text

    done = suite(*args)  # resume: nothing left to train
    assert done.returncode == 0, done.stderr + done.stdout
    assert "0 trained" in done.stdout and " 1 trained" not in done.stdout
    rerun = json.loads((out / "suite.json").read_text(encoding="utf-8"))
    assert {s["study"]: s["wall_seconds"] for s in rerun["studies"]} == walls  # kept
    assert json.loads((out / "verdicts.json").read_text(encoding="utf-8")) == records


def test_a_bad_file_stops_the_suite_before_anything_runs(
    tmp_path: Path, suite: Callable[..., Done]
) -> None:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "a.yaml").write_text((TINY / "a_order.yaml").read_text(), encoding="utf-8")
    (folder / "b.yaml").write_text("name: b\ntrial: {hidden: 0}\n", encoding="utf-8")
    done = suite(str(folder), "--run-dir", str(tmp_path / "runs"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "b.yaml" in done.stderr and "hidden" in done.stderr
    assert not (tmp_path / "runs").exists()  # not even the stores


def test_two_files_with_one_study_name_are_refused(
    tmp_path: Path, suite: Callable[..., Done]
) -> None:
    folder = tmp_path / "suite"
    folder.mkdir()
    for name in ("a.yaml", "b.yaml"):
        (folder / name).write_text((TINY / "a_order.yaml").read_text(), encoding="utf-8")
    done = suite(str(folder), "--run-dir", str(tmp_path / "runs"))
    assert done.returncode == 2 and "'tiny_order' is also the name in" in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing", "is not a folder"),
        (lambda p: p, "holds no study files"),
    ],
)
def test_a_folder_without_study_files_is_refused(
    tmp_path: Path, suite: Callable[..., Done], make: Any, words: str
) -> None:
    done = suite(str(make(tmp_path)), "--run-dir", str(tmp_path / "runs"))
    assert done.returncode == 2 and words in done.stderr


def test_an_inconclusive_published_result_is_listed_with_the_published_results(
    tmp_path: Path,
) -> None:
    """The kind of a verdict is its rule's: a reproduction judged "inconclusive" is a
    published result, not a declared comparison."""
    paper = Verdict("le2015_sgd", "an IRNN learns", "inconclusive", REPRODUCTION_RULE, "e")
    study = SuiteStudy("le", "le.yaml", "", [paper], trials=4, wall_seconds=1.0,
                       estimated_cpu_seconds=2.0)  # fmt: skip
    run = {"command": "initstudy suite", "machine": "m", "commit": "c", "date": "d", "folder": "f"}
    paths = write_suite_report([study], tmp_path, run | {"wall_seconds": 1.0, "cpus": 2})
    records = json.loads(paths["verdicts"].read_text(encoding="utf-8"))
    assert [(r["id"], r["kind"]) for r in records] == [("le2015_sgd", "reproduction")]
    page = paths["markdown"].read_text(encoding="utf-8")
    published = page.index("## Published results")
    assert published < page.index("| le2015_sgd |") < page.index("## The studies")
    assert "| [le](le/report.md) |" in page  # a link, whatever pandas makes of strings


def test_the_readme_results_section_is_rendered_from_the_committed_report() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(README_BEGIN), readme.index(README_END) + len(README_END)
    assert readme[start:end] == readme_block(RESULTS).rstrip("\n"), (
        "README.md's results section differs from docs/results: run `make reproduce`"
    )


def test_the_committed_report_judges_every_claim_under_its_conditions() -> None:
    """The committed suite judges C1-C6 and its published results; C4 is one record whose
    evidence maps the conditions (both optimizers, both tasks); a published result is
    "reproduced" only with a control arm that learned, and an inconclusive one says what
    would decide it."""
    records = json.loads((RESULTS / "verdicts.json").read_text(encoding="utf-8"))
    allowed = {"supported", "refuted", "partly supported", "inconclusive"}
    claims = [r for r in records if r["kind"] == "claim"]
    assert {r["id"] for r in claims} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert all(r["verdict"] in allowed for r in claims), claims
    (c4,) = [r for r in claims if r["id"] == "C4"]
    for condition in ("under sgd", "under adam", "on adding", "on charlm"):
        assert condition in c4["evidence"], condition
    papers = {r["id"]: r for r in records if r["kind"] == "reproduction"}
    assert {"arjovsky2016", "henaff2016", "le2015_adam", "le2015_sgd"} <= set(papers)
    for paper in papers.values():
        assert paper["verdict"] in ("reproduced", "not reproduced", "inconclusive"), paper
        assert "Protocol: the paper's" in paper["evidence"]
        if paper["verdict"] == "reproduced":
            assert ": learns" in paper["evidence"], paper  # an arm that should learn did
        if paper["verdict"] == "inconclusive":
            assert "Would decide" in paper["evidence"], paper
