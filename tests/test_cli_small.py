"""Small commands and output details of the ``initstudy`` CLI: ``--version``, ``schemes``,
``--set`` overrides, flags shown as flags, and empty cells for missing values."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import Done

from models import CELLS, INIT_SCHEMES, OPTIMIZERS, TASKS
from pipeline import storage as st
from pipeline.cli.outputs import _fmt
from pipeline.cli.trial import catalog
from pipeline.studyspec import parse_study_spec
from pipeline.version import code_version


def test_version_prints_the_package_version_and_exits_zero(cli_here: Callable[..., Done]) -> None:
    done = cli_here("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"initstudy {code_version()}"


def test_schemes_lists_every_registered_name_with_a_line_on_it(
    cli_here: Callable[..., Done],
) -> None:
    done = cli_here("schemes")
    assert done.returncode == 0, done.stderr
    listed = {title: dict(rows) for title, rows in catalog().items()}
    registries = [INIT_SCHEMES, CELLS, TASKS, OPTIMIZERS]
    assert [set(rows) for rows in listed.values()] == [set(r) for r in registries]
    assert "no nonlinearity" in listed["cells (cell)"]["rnn_linear"]  # the linear cell
    for rows in listed.values():
        for name, line in rows.items():
            assert line and ":class:" not in line and "``" not in line, (name, line)
            assert name in done.stdout and line[:40] in done.stdout.replace("\n", " ")


@pytest.mark.parametrize("command", ["run", "suite"])
def test_yes_is_shown_as_a_flag_without_a_value(
    cli_here: Callable[..., Done], command: str
) -> None:
    done = cli_here(command, "--help")
    line = next(ln for ln in done.stdout.splitlines() if "--yes" in ln)
    assert "<bool>" not in line


@pytest.mark.parametrize(
    ("value", "text"),
    [(math.nan, ""), (pd.NA, ""), (None, ""), (0.1234567, "0.1235"), (3, "3"), ("x", "x")],
)
def test_a_missing_value_is_an_empty_cell(value: object, text: str) -> None:
    assert _fmt(value) == text


TINY_SPEC = Path(__file__).parent / "data" / "smoke_tiny.yaml"


def test_set_overrides_a_field_as_an_edit_of_the_file_would(
    cli_here: Callable[..., Done],
) -> None:
    plain = cli_here("validate", str(TINY_SPEC))
    assert "trials: 6" in plain.stdout
    done = cli_here(
        "validate", str(TINY_SPEC), "--set", "space.seed=[0, 1]", "--set", "name=other"
    )
    assert done.returncode == 0, done.stderr
    assert "trials: 4" in done.stdout and "study 'other'" in done.stdout


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("trial", "must be KEY=VALUE"),
        ("trial..lr=1", "must be KEY=VALUE"),
        ("name.x=1", "name is a value, not a section"),
        ("trial.lr=[1,", "the value is not YAML"),
        ("trial.max_epochs=0", "trial.max_epochs: must be >= 1 (got 0)"),
        ("trial.colour=red", "trial.colour"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2(
    cli_here: Callable[..., Done], override: str, words: str
) -> None:
    done = cli_here("validate", str(TINY_SPEC), "--set", override)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr


@pytest.mark.slow
def test_a_run_with_overrides_stores_the_overridden_spec_and_hashes_it(
    cli_here: Callable[..., Done], tmp_path: Path, in_process_executor: list[Any]
) -> None:
    run_dir = tmp_path / "runs"
    args = ["run", str(TINY_SPEC), "--run-dir", str(run_dir)]
    done = cli_here(*args, "--set", "trial.max_epochs=1", "--set", "space.seed=[0]")
    assert done.returncode == 0, done.stderr
    storage = st.make_storage(f"sqlite:///{run_dir / 'optuna.db'}")
    study = st.load_existing_study(storage, "smoke")
    assert len(study.trials) == 2 and len(in_process_executor) == 1
    text = study.user_attrs[st.SPEC_TEXT]
    assert text.startswith(f"# {TINY_SPEC} with --set trial.max_epochs=1 --set space.seed=[0]")
    stored = parse_study_spec(yaml.safe_load(text), "stored")
    assert stored.max_epochs == 1 and stored.spec_hash() == study.user_attrs[st.SPEC_HASH]
    refused = cli_here(*args)  # the file without the overrides is another spec
    assert refused.returncode == 2 and "different spec" in refused.stderr


def test_results_headers_are_never_cut(
    cli_here: Callable[..., Done], smoke_study: Any, tmp_path: Path
) -> None:
    run_dir = smoke_study.copy_to(tmp_path / "runs")
    done = cli_here("results", "smoke", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    header = next(ln for ln in done.stdout.splitlines() if "trial_number" in ln)
    assert "…" not in done.stdout
    for name in ("init_recurrent", "converged_epoch", "best_val_loss", "spectral_radius"):
        assert name in header
