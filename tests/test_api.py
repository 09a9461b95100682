"""The Python API (pipeline/api.py): studies run and read from Python, as the CLI does."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import Done, SmokeRun

from pipeline import api
from pipeline import storage as st
from pipeline.analysis.tables import EPOCH_COLUMNS, TRIAL_COLUMNS
from pipeline.analysis.verdicts import judge
from pipeline.results import QueryError
from pipeline.specerrors import SpecError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "smoke_tiny.yaml"
FAST = ["trial.max_epochs=2", "trial.batches_per_epoch=2", "trial.val_size=16"]
"""Overrides that make the tiny spec's trials train in a blink."""


def doc_blocks() -> list[str]:
    """The ```python blocks of docs/api.md, in order."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def error_line(done: Done) -> str:
    """The CLI's one error line, without its ``error: `` head."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0].removeprefix("error: ")


def csv_frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def as_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame as the CLI's ``--format csv`` writes it, read back."""
    return csv_frame(frame.to_csv(index=False))


# --------------------------------------------------------------------------- run_study


@pytest.mark.slow  # it runs a study (in this process)
def test_run_study_returns_the_study_with_its_tables_verdicts_and_sql(
    tmp_path: Path,
    in_process_executor: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rich.console import Console

    from pipeline import progress

    reporters: list[progress.Reporter] = []

    class OnATerminal(progress.Reporter):  # a console that would show the progress bar
        def __init__(self, console: Console | None = None, enabled: bool | None = None):
            super().__init__(Console(force_terminal=True), enabled)
            reporters.append(self)

    monkeypatch.setattr(progress, "Reporter", OnATerminal)
    run_dir = tmp_path / "runs"
    study = api.run_study(TINY, run_dir=run_dir, workers=2, overrides=[*FAST, "space.seed=[0]"])
    assert len(in_process_executor) == 1, "the driver trains through its executor"
    assert [r.enabled for r in reporters] == [False], "no progress bar unless asked for"
    assert capsys.readouterr() == ("", ""), "nothing printed"
    assert (study.name, study.run_dir) == ("smoke", run_dir)
    assert study.outcome is not None and (study.outcome.trained, study.outcome.failed) == (2, [])
    c = study.counts
    assert (c.planned, c.complete, c.remaining) == (2, 2, 0)

    trials, epochs = study.trials, study.epochs
    assert list(trials.columns) == list(TRIAL_COLUMNS) and len(trials) == 2
    assert sorted(trials["init"]) == ["uniform01", "xavier"]
    assert set(trials["max_epochs"]) == {2}, "the override reached the trials"
    assert list(epochs.columns) == list(EPOCH_COLUMNS)
    assert len(epochs) == int(trials["epochs_run"].sum()) > 0

    verdicts = study.verdicts
    assert list(verdicts.columns) == [
        "claim_id",
        "claim",
        "verdict",
        "evidence",
        "rule",
        "numbers",
    ]
    expected = judge(study.tables)
    assert list(verdicts["claim_id"]) == [v.claim_id for v in expected] != []
    assert list(verdicts["verdict"]) == [v.verdict for v in expected]

    got = study.query("select init, count(*) as n from trials group by init order by init")
    assert got.to_dict("records") == [{"init": "uniform01", "n": 1}, {"init": "xavier", "n": 1}]


@pytest.mark.slow  # it runs a study (in this process)
def test_a_spec_as_text_or_dict_is_the_same_study_and_a_rerun_resumes(
    tmp_path: Path, in_process_executor: list[Any]
) -> None:
    data: dict[str, Any] = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data["trial"].update(max_epochs=2, batches_per_epoch=2, val_size=16)
    data["space"].update(init=["xavier"], seed=[0])
    first = api.run_study(yaml.safe_dump(data), run_dir=tmp_path)
    stored = st.load_existing_study(st.make_storage(first.storage_url), "smoke")
    assert stored.user_attrs[st.SPEC_TEXT] == yaml.safe_dump(data), "the text, as given"
    again = api.run_study(data, run_dir=tmp_path)
    assert again.outcome is not None and again.outcome.trained == 0, "the same spec resumes"
    assert len(again.trials) == 1
    with pytest.raises(st.StudyError, match="different spec"):
        api.run_study(data, run_dir=tmp_path, overrides=["trial.lr=0.02"])


@pytest.mark.slow  # it runs a study (in this process)
def test_a_tuned_spec_runs_both_stages(tmp_path: Path, in_process_executor: list[Any]) -> None:
    spec = {
        "name": "tuned",
        "sampler": "grid",
        "trial": {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
        | {"batches_per_epoch": 2, "max_epochs": 2, "val_size": 16},
        "space": {"init": ["xavier", "uniform01"], "seed": [0]},
        "protocol": {"kind": "tuned", "lr": [1e-3, 1e-2], "tuning_seeds": [100]},
    }
    study = api.run_study(spec, run_dir=tmp_path)
    assert study.name == "tuned", "stage 2's study, the one the verdicts read"
    assert len(study.trials) == 2 and len(study.picks) == 2
    ladder = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # the grid, and its 2 extensions each way
    assert {p.lr for p in study.picks} <= set(ladder)
    assert set(study.trials["lr"]) == {p.lr for p in study.picks}
    listed = api.list_studies(run_dir=tmp_path)
    tuned = int(listed.set_index("study").loc["tuned.tune", "complete"])
    assert listed[["study", "stage", "planned", "complete"]].to_dict("records") == [
        {"study": "tuned", "stage": "measure", "planned": 2, "complete": 2},
        {"study": "tuned.tune", "stage": "tune", "planned": tuned, "complete": tuned},
    ]
    assert 4 <= tuned <= 4 + 2 * 2  # the grid, and up to 2 extensions per arm


@pytest.mark.slow  # it runs a study (in this process)
def test_failed_trials_are_a_warning_and_listed_on_the_outcome(
    tmp_path: Path, in_process_executor: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import execution

    real = execution.pack_messages

    def flaky(specs: list[Any], *args: Any) -> Iterator[tuple[str, Any]]:
        if any(s.init == "uniform01" for s in specs):
            raise RuntimeError("no memory for this pack")
        yield from real(specs, *args)

    monkeypatch.setattr(execution, "pack_messages", flaky)
    with pytest.warns(
        UserWarning, match=r"1 trial\(s\) failed .*: trial \d+: RuntimeError: no memory"
    ):
        study = api.run_study(
            TINY, run_dir=tmp_path, pack_size=1, overrides=[*FAST, "space.seed=[0]"]
        )
    assert study.outcome is not None and len(study.outcome.failed) == 1
    assert list(study.trials["init"]) == ["xavier"] and study.counts.failed == 1


@pytest.mark.slow  # it runs a study (in this process)
def test_the_run_example_of_the_docs_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process_executor: list[Any]
) -> None:
    run_block = doc_blocks()[0]
    assert "api.run_study(" in run_block
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(run_block, "docs/api.md", "exec"), names)
    assert isinstance(names["study"], api.Study) and len(in_process_executor) == 1
    assert (names["counts"].planned, names["counts"].complete) == (2, 2)
    assert (tmp_path / "runs" / "optuna.db").is_file() and (
        tmp_path / "runs" / "mlflow.db"
    ).is_file()


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_the_cli_line_before_anything_starts(
    tmp_path: Path, in_process_executor: list[Any], cli_here: Callable[..., Done]
) -> None:
    run_dir = tmp_path / "runs"
    with pytest.raises(SpecError) as bad_set:
        api.run_study(TINY, run_dir=run_dir, overrides=["trial.max_epochs"])
    cli = cli_here("run", str(TINY), "--run-dir", str(run_dir), "--set", "trial.max_epochs")
    assert error_line(cli) == str(bad_set.value)
    assert str(bad_set.value).startswith("--set 'trial.max_epochs': must be KEY=VALUE")
    with pytest.raises(SpecError, match=r"^--set 'trial\.max_epochs': "):
        api.run_study(TINY, run_dir=run_dir, overrides="trial.max_epochs")  # one, not letters

    with pytest.raises(SpecError) as bad_field:
        api.run_study(TINY, run_dir=run_dir, overrides=["trial.lr=-1"])
    cli = cli_here("run", str(TINY), "--run-dir", str(run_dir), "--set", "trial.lr=-1")
    assert error_line(cli) == str(bad_field.value)

    with pytest.raises(ValueError) as workers:
        api.run_study(TINY, run_dir=run_dir, workers=0)
    assert type(workers.value) is ValueError
    cli = cli_here("run", str(TINY), "--run-dir", str(run_dir), "--workers", "0")
    expected = "--workers: must be from 1 to 4096, got 0"
    assert error_line(cli) == "--" + str(workers.value) == expected

    with pytest.raises(ValueError) as url:
        api.run_study(TINY, storage="sqlite://", run_dir=run_dir)
    cli = cli_here("run", str(TINY), "--storage", "sqlite://", "--run-dir", str(run_dir))
    assert error_line(cli) == "--" + str(url.value)

    big = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    big["space"]["seed"] = list(range(1001))
    with pytest.raises(ValueError, match=r"plans 2,002 trials.*; pass yes=True to start it$"):
        api.run_study(big, run_dir=run_dir)

    with pytest.raises(SpecError, match=r"^<spec text>: invalid YAML at line \d"):
        api.run_study("name: [\n", run_dir=run_dir)
    with pytest.raises(SpecError, match=r"^<spec dict>: "):
        api.run_study({"name": "x", "trial": {"lr": -1}}, run_dir=run_dir)
    assert in_process_executor == [] and not run_dir.exists(), "nothing started or written"


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("cpus_per_trial", 0.0),
        ("gpus_per_trial", -1.0),
        ("pack_size", 0),
        ("study_name", "../x"),
        ("address", "nowhere"),
        ("tracking_uri", "ftp://x"),
    ],
)
def test_each_run_option_is_refused_with_the_clis_line(
    keyword: str, value: object, tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    """One check serves both (pipeline.frontend): the CLI's line, naming ``--OPTION``."""
    run_dir = tmp_path / "runs"
    with pytest.raises(ValueError) as bad:
        api.run_study(TINY, run_dir=run_dir, **{keyword: value})
    assert type(bad.value) is ValueError and str(bad.value).startswith(f"{keyword}: ")
    option = "--" + keyword.replace("_", "-")
    cli = cli_here("run", str(TINY), "--run-dir", str(run_dir), option, str(value))
    assert error_line(cli) == "--" + str(bad.value).replace(keyword, option[2:], 1)
    assert not run_dir.exists()


def test_reading_what_is_not_there_raises_one_line(tmp_path: Path) -> None:
    with pytest.raises(st.StudyError) as nothing:
        api.open_study("smoke", run_dir=tmp_path)
    assert str(nothing.value) == (
        f"no study storage in {str(tmp_path)!r} (no optuna.db); give run_dir or storage"
    )
    with pytest.raises(st.StudyError, match="reading a study creates none"):
        api.list_studies(storage=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(ValueError, match=r"^name: '\.\./x' is not a study name"):
        api.open_study("../x", run_dir=tmp_path)
    assert list(tmp_path.iterdir()) == [], "reading creates nothing"


def test_the_api_keeps_the_clis_limits_and_imports_no_cli() -> None:
    from pipeline import frontend
    from pipeline.cli import base

    for name in ("STORAGE_SCHEMES", "TRACKING_SCHEMES", "CONFIRM_TRIALS", "CONFIRM_CPU_HOURS"):
        assert getattr(api, name) is getattr(base, name) is getattr(frontend, name), name
    code = (
        "import sys, pipeline.api\n"
        "print(sorted(m for m in sys.modules if 'typer' in m or m.startswith('pipeline.cli')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", "a notebook's import of the API loads no CLI"


# --------------------------------------------------------------------------- open_study


def test_open_study_reads_what_the_cli_prints(
    smoke_study: SmokeRun, tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    run_dir = smoke_study.copy_to(tmp_path / "runs")
    study = api.open_study("smoke", run_dir=run_dir)
    for table in ("trials", "epochs"):
        cli = cli_here(
            "results", "smoke", "--table", table, "--format", "csv", "--run-dir", str(run_dir)
        )
        assert cli.returncode == 0, cli.stderr
        pd.testing.assert_frame_equal(as_csv(getattr(study, table)), csv_frame(cli.stdout))
    sql = "select init, avg(best_val_loss) as loss from trials group by init order by init"
    cli = cli_here("query", "smoke", sql, "--format", "csv", "--run-dir", str(run_dir))
    pd.testing.assert_frame_equal(as_csv(study.query(sql)), csv_frame(cli.stdout))
    assert len(study.trials) == study.counts.complete == 6

    with pytest.raises(QueryError) as bad_sql:
        study.query("selec 1")
    cli = cli_here("query", "smoke", "selec 1", "--run-dir", str(run_dir))
    assert error_line(cli) == str(bad_sql.value) and str(bad_sql.value).startswith("query: ")

    with pytest.raises(st.StudyError) as missing:
        api.open_study("nope", run_dir=run_dir)
    cli = cli_here("results", "nope", "--run-dir", str(run_dir))
    assert (
        error_line(cli)
        == str(missing.value)
        == ("no study named 'nope' in this storage; studies: smoke")
    )
    url = f"sqlite:///{run_dir / 'optuna.db'}"
    by_url = api.open_study("smoke", storage=url, run_dir=tmp_path / "elsewhere")
    assert by_url.tracking_uri is None, "no MLflow store given nor in the default run_dir"
    pd.testing.assert_frame_equal(by_url.trials, study.trials)


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_the_read_example_of_the_docs_runs_and_writes_the_report(
    smoke_study: SmokeRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_block = doc_blocks()[1]
    assert "api.open_study(" in read_block and ".report(" in read_block
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import KIND_TAG

    smoke_study.copy_to(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(read_block, "docs/api.md", "exec"), names)
    assert len(names["trials"]) == 6 and len(names["epochs"]) > 6
    assert names["by_init"].to_dict("records") == [
        {"init": "uniform01", "n": 3},
        {"init": "xavier", "n": 3},
    ]
    files = names["files"]
    assert {"markdown", "html", "verdicts"} <= set(files) and len(files) > 3
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
        assert path.resolve().is_relative_to(tmp_path / "reports" / "smoke")
    written = json.loads(files["verdicts"].read_text(encoding="utf-8"))
    verdicts = names["verdicts"]
    assert [v["id"] for v in written] == list(verdicts["claim_id"])
    assert [v["verdict"] for v in written] == list(verdicts["verdict"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = 'study'")
    logged = [f.path for f in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/report.md" in logged, "the report went on the study's MLflow run"
    assert names["studies"].to_dict("records") == [
        {"study": "smoke", "stage": "", "planned": 6, "complete": 6, "running": 0, "failed": 0}
    ]
