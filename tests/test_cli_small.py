"""Small commands and output details of the ``initstudy`` CLI: ``--version``, ``schemes``,
flags shown as flags, and empty cells for missing values."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest
from conftest import Done

from models import CELLS, INIT_SCHEMES, OPTIMIZERS, TASKS
from pipeline.cli.outputs import _fmt
from pipeline.cli.trial import catalog
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
