"""Results tables from a real Optuna store, and read-only SQL over them (pipeline.results)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest
from factories import diagnostics, history, trial_result
from optuna.trial import TrialState

from models import fields
from models.spec import TrialResult, TrialSpec
from pipeline import results, urls
from pipeline import storage as st
from pipeline.analysis import tables as tables_module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(smoke_study) -> tuple[str, Path]:
    """The session's smoke study (tests/conftest.py): (storage URL, path of its SQLite file).

    Shared with other modules, so read it only (these tests check that reading writes
    nothing: the file's hash is unchanged).
    """
    return urls.default_storage_url(smoke_study.run_dir), smoke_study.optuna_db


@pytest.fixture(scope="module")
def tables(smoke: tuple[str, Path]) -> results.StudyTables:
    return results.load_tables("smoke", smoke[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_schema(df: pd.DataFrame, schema: dict[str, str]) -> None:
    assert list(df.columns) == list(schema)
    assert {c: str(df[c].dtype) for c in df.columns} == schema


# -- load_tables on a real store ------------------------------------------------------------


def test_one_row_per_complete_trial(smoke, tables):
    storage = st.make_storage(smoke[0])
    study = st.load_existing_study(storage, "smoke")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(tables.trials) == len(complete) == 6
    assert tables.trials["trial_number"].tolist() == sorted(t.number for t in complete)
    by_number = {t.number: t for t in complete}
    for row in tables.trials.itertuples():
        t = by_number[row.trial_number]
        assert row.key == t.user_attrs[st.KEY]
        assert row.value == t.value  # the same objective the driver told Optuna
    assert tables.study == "smoke"
    assert tables.claim == "xavier converges 2-10x faster than uniform01"
    assert "name: smoke" in tables.spec_text


def test_dtypes_are_the_documented_schema(tables):
    assert_schema(tables.trials, results.TRIAL_COLUMNS)
    assert_schema(tables.epochs, results.EPOCH_COLUMNS)
    assert_schema(tables.steps, results.STEP_COLUMNS)
    assert str(tables.trials["converged_epoch"].dtype) == "Int64"
    assert str(tables.trials["seq_len"].dtype) == "int64"
    assert str(tables.trials["converged"].dtype) == "bool"


def test_trial_columns_are_consistent(tables):
    t = tables.trials
    assert (t["censored"] == ~t["converged"]).all()
    assert (t["converged"] == t["converged_epoch"].notna()).all()
    assert (t["diverged"] == t["diverged_epoch"].notna()).all()
    assert set(t["device_type"]) == {"cpu"}
    assert (t["pack_size"] >= 1).all()
    assert t["init_recurrent"].isna().all() and t["corpus"].isna().all()
    assert sorted(set(t["init"])) == ["uniform01", "xavier"]
    assert (t["seed"] == t["data_seed"]).all()
    assert (t["target_loss"] > 0).all()


def test_epochs_and_steps_rows(tables):
    t = tables.trials
    assert len(tables.epochs) == t["epochs_run"].sum()
    assert len(tables.steps) == t["seq_len"].sum()  # adding task: one step per position
    per_trial = tables.epochs.groupby("trial_number")["epoch"].agg(["min", "max", "count"])
    assert (per_trial["min"] == 1).all()
    assert (per_trial["max"] == per_trial["count"]).all()
    assert tables.steps.groupby("trial_number")["step"].min().eq(0).all()
    last = tables.epochs.sort_values("epoch").groupby("trial_number")["val_loss"].last()
    assert last.to_numpy() == pytest.approx(t.set_index("trial_number")["final_val_loss"])


def test_unknown_study_and_missing_file(smoke, tmp_path):
    with pytest.raises(st.StudyError, match=r"no study named 'nope'.*smoke"):
        results.load_tables("nope", smoke[0])
    missing = tmp_path / "missing.db"
    with pytest.raises(st.StudyError, match="no Optuna storage"):
        results.load_tables("smoke", f"sqlite:///{missing}")
    assert not missing.exists()  # reading never creates a storage


# -- query ----------------------------------------------------------------------------------


def test_query_group_by(tables):
    got = results.query(
        tables, "SELECT init, median(converged_epoch) AS m FROM trials GROUP BY init ORDER BY init"
    )
    t = tables.trials
    want = t.groupby("init")["converged_epoch"].median().sort_index()
    assert got["init"].tolist() == want.index.tolist()
    for m, w in zip(got["m"], want, strict=True):
        assert (pd.isna(m) and pd.isna(w)) or m == w
    n = results.query(tables, "SELECT count(*) AS n FROM epochs JOIN trials USING (trial_number)")
    assert int(n["n"].iloc[0]) == len(tables.epochs)


def test_query_cannot_write_files(tables, tmp_path):
    target = tmp_path / "x.csv"
    with pytest.raises(results.QueryError, match="disabled"):
        results.query(tables, f"COPY trials TO '{target}'")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(results.QueryError):
        results.query(tables, f"EXPORT DATABASE '{tmp_path / 'dump'}'")
    assert list(tmp_path.iterdir()) == []


def test_query_cannot_attach_or_read_files(smoke, tables, tmp_path):
    other = tmp_path / "other.db"
    with pytest.raises(results.QueryError, match="disabled"):
        results.query(tables, f"ATTACH '{other}' AS o")
    assert not other.exists()
    with pytest.raises(results.QueryError):
        results.query(tables, f"ATTACH '{smoke[1]}' AS optuna (TYPE sqlite)")
    with pytest.raises(results.QueryError, match="disabled"):
        results.query(tables, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(results.QueryError):
        results.query(tables, "SELECT * FROM '/etc/passwd'")


def test_query_cannot_load_extensions_or_unlock(tables):
    for sql in (
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
    ):
        with pytest.raises(results.QueryError):
            results.query(tables, sql)


def test_query_sees_no_python_variables(tables):
    secret = pd.DataFrame({"x": [1]})  # noqa: F841 (DuckDB could find it by name)
    with pytest.raises(results.QueryError, match="secret"):
        results.query(tables, "SELECT * FROM secret")


def test_query_ddl_cannot_touch_storage_or_tables(smoke, tmp_path):
    before = sha256(smoke[1])
    tables = results.load_tables("smoke", smoke[0])
    trials_before = tables.trials.copy()
    results.query(tables, "CREATE TABLE t AS SELECT * FROM trials")
    with pytest.raises(results.QueryError):
        results.query(tables, "DROP TABLE trials")  # trials is a view of the DataFrame
    results.query(tables, "DROP VIEW trials")
    with pytest.raises(results.QueryError):
        results.query(tables, "DELETE FROM trials")
    # each query has its own throwaway connection: trials is still there, unchanged
    assert len(results.query(tables, "SELECT * FROM trials")) == len(trials_before)
    pd.testing.assert_frame_equal(tables.trials, trials_before)
    assert sha256(smoke[1]) == before


def test_query_error_is_one_line(tables):
    with pytest.raises(results.QueryError) as info:
        results.query(tables, "SELECT no_such_column FROM trials")
    message = str(info.value)
    assert "\n" not in message and "no_such_column" in message


_ENDLESS = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t) SELECT count(*) FROM t"


@pytest.mark.timeout(60)
def test_query_memory_is_bounded(tables):
    # a billion-element list: refused at the memory limit (1 GiB), in seconds
    with pytest.raises(results.QueryError, match=r"more than the 1 GiB of memory") as info:
        results.query(tables, "SELECT len(list(range)) FROM range(1000000000)")
    assert "\n" not in str(info.value) and "Out of Memory" in str(info.value)


@pytest.mark.timeout(60)
def test_query_time_is_bounded(tables):
    import time

    started = time.monotonic()
    with pytest.raises(results.QueryError, match=r"^stopped after 1 s, the time a query may"):
        results.query(tables, _ENDLESS, timeout=1)
    assert time.monotonic() - started < 10
    # the default limit is 30 s
    assert tables_module.QUERY_TIMEOUT == 30.0


def test_query_result_rows_are_bounded(tables):
    with pytest.raises(results.QueryError, match=r"more than 1,000 rows"):
        results.query(tables, "SELECT * FROM range(1001)", max_rows=1000)
    assert len(results.query(tables, "SELECT * FROM range(1000)", max_rows=1000)) == 1000
    # a result converted in chunks is still one frame, in order
    got = results.query(tables, "SELECT range AS n FROM range(5000)")
    assert got["n"].tolist() == list(range(5000))


@pytest.mark.parametrize(
    "sql", ["SET memory_limit = '100GB'", "SET threads = 64", "RESET memory_limit"]
)
def test_query_limits_cannot_be_lifted(tables, sql):
    with pytest.raises(results.QueryError, match="configuration has been locked"):
        results.query(tables, sql)
    got = results.query(tables, "SELECT current_setting('threads') AS t")
    assert int(got["t"][0]) == tables_module.QUERY_THREADS


@pytest.mark.parametrize("sql", ["", "  \n\t "])
def test_empty_query_is_refused(tables, sql):
    with pytest.raises(results.QueryError, match="the SQL is empty"):
        results.query(tables, sql)


@pytest.mark.timeout(120)
def test_cli_query_limits_are_one_line(smoke_study, cli_here, monkeypatch):
    monkeypatch.setattr(tables_module, "QUERY_TIMEOUT", 1.0)
    run_dir = str(smoke_study.run_dir)
    for sql, code, words in (
        (_ENDLESS, 2, ("query: stopped after 1 s",)),
        # whichever limit comes first: memory, or the 1 s here
        ("SELECT len(list(range)) FROM range(1000000000)", 2, ("query: it needs", "query: stop")),
        ("", 2, ("SQL: the query is empty",)),
        ("   ", 2, ("SQL: the query is empty",)),
    ):
        done = cli_here("query", "smoke", sql, "--run-dir", run_dir)
        assert done.returncode == code, (sql, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert any(w in lines[0] for w in words), lines
        assert done.stdout == ""


# -- tables_from_results --------------------------------------------------------------------


def _result(
    converged: int | None,
    diverged: int | None,
    epochs: int,
    *,
    device: str = "cpu",
    extra: dict | None = None,
    **spec: object,
) -> TrialResult:
    s = TrialSpec(max_epochs=10, seq_len=3, **spec)  # type: ignore[arg-type]
    return trial_result(
        s,
        history(
            [math.inf if diverged == e else 0.5 / e for e in range(1, epochs + 1)],
            train_losses=[1.0 / e for e in range(1, epochs + 1)],
            hidden_var=0.1,
        ),
        diagnostics=diagnostics(
            radius=1.2,
            hidden_var=[0.1, 0.2, 0.3],
            hidden_sat=[0.0, 0.1, 0.2],
            grad_norm=[3.0, 2.0, 1.0],
            initial_loss=0.9,
        ),
        converged=converged,
        diverged=diverged,
        baseline=0.17,
        wall_seconds=1.5,
        device=device,
        node="n1",
        extra=extra or {},
    )


def test_tables_from_hand_built_results():
    rows = [
        (2, "k2", _result(None, 3, 3, init="uniform01", clip=None)),
        (0, "k0", _result(4, None, 4, init="xavier", clip=1.0, init_recurrent="orthogonal")),
        (
            1,
            "k1",
            _result(None, None, 10, device="cuda:NVIDIA H200", extra={"pack_size": 4}, seed=1),
        ),
    ]
    tables = results.tables_from_results("hand", rows, claim="c", spec_text="s")
    t = tables.trials
    assert_schema(t, results.TRIAL_COLUMNS)
    assert t["trial_number"].tolist() == [0, 1, 2]
    assert t["key"].tolist() == ["k0", "k1", "k2"]
    assert t["converged"].tolist() == [True, False, False]
    assert t["censored"].tolist() == [False, True, True]
    assert t["diverged"].tolist() == [False, False, True]
    assert t["converged_epoch"].tolist() == [4, pd.NA, pd.NA]
    assert t["diverged_epoch"].tolist() == [pd.NA, pd.NA, 3]
    assert t["value"].tolist() == [4.0, 11.0, 11.0]  # max_epochs + 1 when not converged
    assert t["device_type"].tolist() == ["cpu", "cuda", "cpu"]
    assert t["pack_size"].tolist() == [1, 4, 1]
    assert t["init_recurrent"].iloc[0] == "orthogonal" and pd.isna(t["init_recurrent"].iloc[1])
    assert t["clip"].iloc[0] == 1.0 and math.isnan(t["clip"].iloc[2])
    assert t["grad_norm_first"].eq(3.0).all() and t["grad_norm_last"].eq(1.0).all()
    assert t["hidden_var_last"].eq(0.3).all() and t["hidden_sat_first"].eq(0.0).all()
    assert t["final_val_loss"].iloc[0] == pytest.approx(0.125)
    assert math.isinf(t["final_val_loss"].iloc[2])
    assert t["best_val_loss"].iloc[2] == pytest.approx(0.25)
    assert t["epochs_run"].tolist() == [4, 10, 3]
    assert len(tables.epochs) == 17 and len(tables.steps) == 9
    assert tables.steps["step"].tolist()[:3] == [0, 1, 2]
    assert tables.epochs.loc[tables.epochs["trial_number"] == 1, "device_type"].eq("cuda").all()
    assert (tables.study, tables.claim, tables.spec_text) == ("hand", "c", "s")
    got = results.query(tables, "SELECT count(*) AS n FROM trials WHERE converged")
    assert int(got["n"].iloc[0]) == 1


def test_empty_study_has_typed_empty_tables():
    tables = results.tables_from_results("empty", [])
    assert tables.trials.empty and tables.epochs.empty and tables.steps.empty
    assert_schema(tables.trials, results.TRIAL_COLUMNS)
    assert_schema(tables.epochs, results.EPOCH_COLUMNS)
    assert_schema(tables.steps, results.STEP_COLUMNS)
    got = results.query(tables, "SELECT init, count(*) AS n FROM trials GROUP BY init")
    assert got.empty


def test_spec_columns_are_the_fields_table():
    spec_columns = {c: d for c, d in results.TRIAL_COLUMNS.items() if c in fields.COLUMNS}
    assert spec_columns == fields.COLUMNS
    assert "stop_on_converge" not in results.TRIAL_COLUMNS


def test_claims_are_parsed_once(monkeypatch: pytest.MonkeyPatch):
    tables = results.tables_from_results("c", [], spec_text="claims:\n  - C4\n  - C1\n")
    calls = []
    real = tables_module.yaml.safe_load
    monkeypatch.setattr(
        tables_module.yaml, "safe_load", lambda text: calls.append(text) or real(text)
    )
    assert tables.claims == ["C4", "C1"]
    assert tables.claims is tables.claims
    assert len(calls) == 1
    assert results.tables_from_results("none", []).claims is None
