"""Issue 28, items 14 and 15: ``postgres://`` is PostgreSQL (its common alias), ``mysql``
(no driver installed) is refused; a packed trial's ``wall_seconds`` is its share of the
pack's time (``pack_wall_seconds`` the whole); the Ctrl-C note counts the running trials
as the progress bar does."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Done

from models.spec import TrialSpec
from models.train import train_pack
from pipeline import storage as st
from pipeline.analysis.efficiency import packs_of, timings_from_results
from pipeline.exitcodes import EXIT_BAD_INPUT
from pipeline.frontend import STORAGE_SCHEMES, TRACKING_SCHEMES, check_url
from pipeline.live import Interrupts, Live
from pipeline.plan import Pending
from pipeline.urls import canonical_url

# -- postgres:// and mysql ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("postgres://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///x/postgres://y.db", "sqlite:///x/postgres://y.db"),
        ("http://postgres:5000", "http://postgres:5000"),
    ],
)
def test_postgres_is_postgresql(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_a_postgres_url_reaches_postgresql_and_mysql_is_refused() -> None:
    check_url("--storage", "postgres://u@h/db", STORAGE_SCHEMES)
    check_url("--tracking-uri", "postgres://u@h/db", TRACKING_SCHEMES)
    # SQLAlchemy knows no "postgres" dialect: the storage must open it as postgresql
    with pytest.raises(st.StudyError) as info:
        st.make_storage("postgres://u@127.0.0.1:1/db")
    assert "Can't load plugin" not in str(info.value)
    assert "postgresql://u@127.0.0.1:1/db" in str(info.value)
    assert "mysql" not in STORAGE_SCHEMES and "postgresql+psycopg2" not in STORAGE_SCHEMES
    with pytest.raises(ValueError, match="allowed schemes: sqlite, postgresql"):
        check_url("--storage", "mysql://u@h/db", STORAGE_SCHEMES)


def test_the_cli_refuses_mysql_naming_the_schemes(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    done = cli_here("list", "--storage", "mysql://u@h/db", "--run-dir", str(tmp_path))
    assert done.returncode == EXIT_BAD_INPUT
    assert "'mysql://u@h/db' is not a supported URL" in done.stderr and "postgres" in done.stderr


# -- wall_seconds: each member's share ------------------------------------------------------


def _spec(seed: int, max_epochs: int) -> TrialSpec:
    return TrialSpec(
        task="adding",
        seq_len=4,
        hidden=8,
        batch_size=8,
        batches_per_epoch=3,
        val_size=16,
        max_epochs=max_epochs,
        seed=seed,
        data_seed=seed,
        init="xavier",
        stop_on_converge=False,
    )


@pytest.mark.slow  # it trains
def test_a_pack_members_wall_seconds_are_shares_of_the_pack_time() -> None:
    specs = [_spec(0, 2), _spec(1, 4), _spec(2, 6)]
    results = train_pack(specs)
    pack = results[0].extra["pack_wall_seconds"]
    assert pack > 0 and all(r.pack_wall_seconds == pack for r in results)
    assert sum(r.wall_seconds for r in results) == pytest.approx(pack)
    epochs = [r.epochs_run for r in results]
    assert epochs == [2, 4, 6]
    total = sum(epochs)
    for r, e in zip(results, epochs, strict=True):
        assert r.wall_seconds == pytest.approx(pack * e / total)
    assert results[0].wall_seconds < results[2].wall_seconds  # fewer epochs, smaller share
    # efficiency still counts the pack once, at the pack's time
    (found,) = packs_of(timings_from_results(enumerate(results)))
    assert found.seconds == pytest.approx(pack)


@pytest.mark.slow  # it trains
def test_a_trial_trained_alone_has_all_of_its_time() -> None:
    (alone,) = train_pack([_spec(0, 2)])
    assert alone.wall_seconds == alone.pack_wall_seconds > 0


@pytest.mark.slow  # it trains
def test_a_result_stored_before_the_share_reads_its_pack_time() -> None:
    (result,) = train_pack([_spec(0, 1)])
    result.extra.pop("pack_wall_seconds")
    assert result.pack_wall_seconds == result.wall_seconds


# -- the Ctrl-C note counts what the bar shows ----------------------------------------------


def test_the_ctrl_c_note_counts_the_running_trials_as_the_bar_does() -> None:
    def pending(n: int) -> Pending:
        return Pending(number=n, trial_id=n, key=f"k{n}", spec=_spec(n, 2))

    started_pack, waiting_pack = [pending(0), pending(1)], [pending(2), pending(3)]
    log = types.SimpleNamespace(tracker=None)
    live = Live(store=None, log=log, planned=4, nominal_epochs=2)  # type: ignore[arg-type]
    live.queued([*started_pack, *waiting_pack])
    live.started(7, started_pack, types.SimpleNamespace(started_at=0.0))  # type: ignore[arg-type]
    in_flight = {7: started_pack, 8: waiting_pack}  # both submitted, one started
    notes: list[str] = []
    interrupts = Interrupts()
    interrupts.stopping = True
    live.announce(interrupts, notes.append, in_flight)
    assert live.progress().training == 2
    assert notes == [
        "Ctrl-C: submitting no more trials; finishing 2 running trials (1 packs) and 2"
        " submitted, not started yet; Ctrl-C again to stop now"
    ]
