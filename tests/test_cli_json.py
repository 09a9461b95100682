"""``--json`` on ``status``, ``list``, ``validate`` and ``check`` (the keys docs/cli.md
lists), shell completion, and ``suite`` on stores of its own (``--storage``,
``--tracking-uri``, ``--address`` like ``run``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import Done
from test_cli_exit_codes import TINY, in_process
from test_cli_exit_codes import tiny_run as tiny_run  # the module's study, shared

from pipeline.cli import jsonout
from pipeline.exitcodes import EXIT_BAD_INPUT, EXIT_OK

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "data" / "smoke_tiny.yaml"


def as_json(done: Done) -> dict:
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    return json.loads(done.stdout)  # stdout is the object and nothing else


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_status_json(cli_here: Callable[..., Done], tiny_run: Path) -> None:
    doc = as_json(cli_here("status", "tiny", "--run-dir", str(tiny_run), "--json"))
    assert tuple(doc) == jsonout.STATUS_KEYS
    assert tuple(doc["trials"]) == jsonout.COUNT_KEYS
    assert doc["study"] == "tiny" and doc["interrupted"] is False
    t = doc["trials"]
    assert t["planned"] == t["complete"] == 2 and t["remaining"] == 0
    assert t["converged"] + t["censored"] + t["stalled"] + t["frozen"] + t["diverged"] == 2


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_list_json(cli_here: Callable[..., Done], tiny_run: Path) -> None:
    doc = as_json(cli_here("list", "--run-dir", str(tiny_run), "--json"))
    assert list(doc) == ["studies"]
    (row,) = doc["studies"]
    assert tuple(row) == jsonout.LIST_KEYS
    assert row == {
        "study": "tiny",
        "stage": None,
        "planned": 2,
        "complete": 2,
        "running": 0,
        "failed": 0,
    }


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_check_json(cli_here: Callable[..., Done], tiny_run: Path) -> None:
    doc = as_json(cli_here("check", "tiny", "--run-dir", str(tiny_run), "--json"))
    assert tuple(doc) == jsonout.CHECK_KEYS
    assert doc == {
        "study": "tiny",
        "ok": True,
        "trials": 2,
        "runs": 2,
        "grid_points": 2,
        "problems": [],
    }


def test_validate_json(cli_here: Callable[..., Done], tmp_path: Path) -> None:
    doc = as_json(cli_here("validate", str(SPEC), "--run-dir", str(tmp_path), "--json"))
    assert tuple(doc) == jsonout.VALIDATE_KEYS
    assert doc["study"] == "smoke" and doc["sampler"] == "grid" and doc["trials"] == 6
    assert doc["stages"] is None and doc["needs_yes"] is False
    assert doc["searched"] == ["init", "seed", "seq_len"] and doc["seeds_per_cell"] == 3
    assert doc["estimated_cpu_seconds"] > 0 and isinstance(doc["warnings"], list)
    assert tuple(doc["power"]) == jsonout.POWER_KEYS and doc["power"]["enough"] is None


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_validate_json_with_a_pilot(
    cli_here: Callable[..., Done], tiny_run: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    pilot = as_json(cli_here("validate", str(spec), "--run-dir", str(tiny_run), "--json"))
    assert pilot["study"] == "tiny" and pilot["trials"] == 2
    assert pilot["power"]["text"] and "no earlier results" not in pilot["power"]["text"]


def test_json_errors_are_one_line_on_stderr_and_nothing_on_stdout(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    for argv in (["status", "nope"], ["list"], ["check", "nope"]):
        done = cli_here(*argv, "--run-dir", str(tmp_path), "--json")
        assert done.returncode == EXIT_BAD_INPUT and done.stdout == "", argv
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_shell_completion_is_on(cli_here: Callable[..., Done]) -> None:
    help_text = cli_here("--help").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    env = {
        **os.environ,
        "_INITSTUDY_COMPLETE": "complete_bash",
        "COMP_WORDS": "initstudy sta",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["status"]


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_suite_runs_on_the_stores_and_cluster_options_it_is_given(tmp_path: Path) -> None:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY)
    stores = tmp_path / "stores"
    run_dir, out = tmp_path / "run", tmp_path / "out"
    argv = ["suite", str(folder), "--run-dir", str(run_dir), "--out", str(out)]
    storage = f"sqlite:///{stores / 'optuna.db'}"
    tracking = f"sqlite:///{stores / 'mlflow.db'}"
    code = in_process([*argv, "--storage", storage, "--tracking-uri", tracking])
    assert code == EXIT_OK
    assert optuna.study.get_all_study_names(storage) == ["tiny"]
    assert (stores / "mlflow.db").is_file() and (out / "report.md").is_file()
    assert not (run_dir / "optuna.db").exists() and not (run_dir / "mlflow.db").exists()
    # --address is run's: checked the same way, before anything starts
    bad = in_process([*argv, "--address", "not an address"])
    assert bad == EXIT_BAD_INPUT


def test_every_json_key_is_documented_in_docs_cli() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text[text.index("## `--json`") : text.index("## Shell completion")]
    keys = {
        *jsonout.STATUS_KEYS,
        *jsonout.COUNT_KEYS,
        *jsonout.LIST_KEYS,
        *jsonout.CHECK_KEYS,
        *jsonout.VALIDATE_KEYS,
        *jsonout.POWER_KEYS,
    }
    missing = sorted(k for k in keys if f'"{k}"' not in section and f"`{k}`" not in section)
    assert missing == []
