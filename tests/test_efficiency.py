"""Study efficiency (pipeline.analysis.efficiency) from the driver's recorded runs: one run,
a resumed study of two, a run without an end, a study with none recorded, packs counted
once; and a real tiny study run through the driver, its record and its report's footer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import SMOKE_SPEC, Done
from factories import diagnostics, history, trial_result

from models.spec import TrialResult, TrialSpec
from pipeline import storage as st
from pipeline.analysis import efficiency as ef
from pipeline.analysis.efficiency import DriverSession, TrialTiming, study_efficiency

T0 = 1_700_000_000.0
"""Unix seconds: when the first driver run started."""


def pack(numbers: list[int], start: float, seconds: float, node: str = "host/1") -> list:
    """The timings of one pack's members: one start, one training time."""
    return [TrialTiming(n, seconds, len(numbers), start, node) for n in numbers]


def first_run() -> list[TrialTiming]:
    """8 trials in 4 packs of 2, 10 s each, on 2 slots, the first starting 4 s into the run."""
    return (
        pack([0, 1], T0 + 4.0, 10.0)
        + pack([2, 3], T0 + 4.5, 10.0)
        + pack([4, 5], T0 + 14.2, 10.0)
        + pack([6, 7], T0 + 14.6, 10.0)
    )


RUN1 = DriverSession(T0, T0 + 24.7, slots=2)


def test_one_recorded_run_counts_each_pack_once_and_measures_its_floor() -> None:
    e = study_efficiency(first_run(), [RUN1])
    assert e.measurable and not e.reason and not e.notes
    assert (e.trials, e.packs) == (8, 4)
    assert e.training_seconds == pytest.approx(40.0)  # not 80: members share their pack's time
    s = e.session
    assert s is not None and (s.slots, s.trials, s.packs) == (2, 8, 4)
    assert s.training_seconds == pytest.approx(40.0) and s.longest_pack_seconds == 10.0
    assert s.startup_seconds == pytest.approx(4.0) and s.wall_seconds == pytest.approx(24.7)
    assert s.floor_seconds == pytest.approx(40.0 / 2 + 4.0)
    assert s.bound_seconds == pytest.approx(24.0)  # training / slots > the longest pack
    assert s.ratio == pytest.approx(24.7 / 24.0)
    assert e.line() == (
        "Wall 24.7 s; training floor 20.0 s (sum of pack training time 40.0 s over 4 packs / "
        "2 slots) + start-up 4.0 s; 1.03x the floor; longest pack 10.0 s."
    )
    doc = json.loads(json.dumps(e.to_dict()))  # a plain JSON document
    assert doc["measurable"] and doc["sessions"][0]["ratio"] == pytest.approx(24.7 / 24.0)


def test_a_long_pack_gives_the_tighter_bound_as_a_note() -> None:
    timings = pack([0], T0 + 2.0, 30.0) + pack([1], T0 + 2.0, 2.0, "host/2")
    e = study_efficiency(timings, [DriverSession(T0, T0 + 33.0, slots=4)])
    s = e.session
    assert s is not None and s.floor_seconds == pytest.approx(32.0 / 4 + 2.0)
    assert s.bound_seconds == pytest.approx(32.0)  # the 30 s pack + start-up
    assert s.ratio == pytest.approx(3.3)  # the floor stays as defined
    assert "longest pack 30.0 s (longest pack + start-up: 32.0 s, 1.03x that)." in e.line()


def second_run() -> list[TrialTiming]:
    """An hour later: trials 8-9 in one pack and trial 10 alone on another node, both
    starting 5 s into the run, 6 s each."""
    later = T0 + 3600.0
    return pack([8, 9], later + 5.0, 6.0) + pack([10], later + 5.0, 6.0, "host/2")


RUN2 = DriverSession(T0 + 3600.0, T0 + 3612.0, slots=4)


def test_a_resumed_study_gets_one_figure_per_run() -> None:
    e = study_efficiency(first_run() + second_run(), [RUN2, RUN1])  # any order
    assert [s.index for s in e.sessions] == [1, 2]
    first, second = e.sessions
    assert (first.trials, second.trials, second.packs) == (8, 3, 2)
    assert first.wall_seconds == pytest.approx(24.7) and first.slots == 2
    assert second.startup_seconds == pytest.approx(5.0) and second.slots == 4
    assert second.training_seconds == pytest.approx(12.0)
    assert second.ratio == pytest.approx(12.0 / (12.0 / 4 + 5.0))
    assert e.session is second and e.measurable
    assert e.training_seconds == pytest.approx(52.0)
    line = e.line()
    assert line.startswith("Run 2 of 2: Wall 12.0 s; training floor 3.0 s")
    assert line.endswith("Earlier run 1: 8 trials, wall 24.7 s, 1.03x its floor.")


def test_a_run_without_an_end_is_not_measured() -> None:
    crashed = DriverSession(T0, None, slots=2)
    alone = study_efficiency(first_run(), [crashed])
    assert not alone.measurable and alone.session is not None
    s = alone.session
    assert s.ratio is None and s.wall_seconds is None and s.floor_seconds is None
    assert s.trials == 8 and s.startup_seconds == pytest.approx(4.0)
    assert alone.line() == (
        "Study efficiency not measured (no recorded end: the run is still going, or it "
        "stopped without recording it); sum of pack training time 40.0 s over 4 packs."
    )
    # Resumed after the crash: the crashed run keeps the packs before the next one started.
    resumed = study_efficiency(first_run() + second_run(), [crashed, RUN2])
    assert [s.trials for s in resumed.sessions] == [8, 3] and resumed.measurable
    assert "Earlier run 1: not measured (no recorded end" in resumed.line()


def test_a_study_with_no_runs_recorded_is_not_measured() -> None:
    e = study_efficiency(first_run())
    assert not e.measurable and not e.sessions and e.session is None
    assert e.line() == (
        "Study efficiency not measured: no driver runs are recorded (a study stored by an "
        "older initstudy); sum of pack training time 40.0 s over 4 packs."
    )
    assert study_efficiency([]).line().endswith("0.0 s over 0 packs.")


def test_packs_outside_every_run_and_results_without_a_start_are_noted() -> None:
    old = [TrialTiming(n, 8.0, pack_size=2) for n in (20, 21)]  # no started_at: one pack
    stray = pack([30], T0 + 100.0, 1.0)  # between the two runs
    e = study_efficiency(first_run() + second_run() + old + stray, [RUN1, RUN2])
    assert [s.trials for s in e.sessions] == [8, 3]
    assert e.packs == 4 + 2 + 1 + 1 and e.training_seconds == pytest.approx(40 + 12 + 8 + 1)
    assert e.notes == [
        "2 trial results without a pack start are in no run",
        "1 packs started outside every recorded run",
    ]
    assert e.line().endswith("; 1 packs started outside every recorded run.")


def test_clock_tolerance_and_a_run_with_nothing_complete() -> None:
    early = pack([0], T0 - 0.5, 3.0)  # the worker's clock half a second behind
    e = study_efficiency(early, [DriverSession(T0, T0 + 4.0, slots=1)])
    assert e.session is not None and e.session.startup_seconds == 0.0 and e.measurable
    assert study_efficiency(pack([0], T0 - 5.0, 3.0), [RUN1]).notes  # too early: outside
    empty = study_efficiency([], [RUN1]).session
    assert empty is not None and empty.reason == "no complete trial trained in it"


def test_sessions_from_the_stored_attribute() -> None:
    stored: list[Any] = [
        {"started": T0 + 10, "slots": 4, "cpus_per_trial": 1.0},
        {"started": T0, "ended": T0 + 5, "slots": 2, "cpus_per_trial": 1.0},
        {"ended": T0},  # no start: skipped
        "junk",
        {"started": T0 + 20, "ended": "soon", "slots": 0},
    ]
    assert ef.sessions_from_attr(stored) == [
        DriverSession(T0, T0 + 5, 2),
        DriverSession(T0 + 10, None, 4),
        DriverSession(T0 + 20, None, None),
    ]
    assert ef.sessions_from_attr(None) == [] and ef.sessions_from_attr({"a": 1}) == []
    no_slots = study_efficiency(first_run(), [DriverSession(T0, T0 + 30.0)])
    assert no_slots.session is not None and no_slots.session.reason == "no slot count recorded"


def result(pack_size: int, started_at: float | None) -> TrialResult:
    extra: dict = {"pack_size": pack_size}
    if started_at is not None:
        extra["started_at"] = started_at
    return trial_result(
        TrialSpec(init="xavier", seq_len=5, max_epochs=2),
        history([0.2, 0.2]),
        diagnostics=diagnostics(5, grad_norm=[0.0] * 5),
        wall_seconds=3.0,
        node="host/1",
        extra=extra,
    )


def test_timings_from_stored_results() -> None:
    rows = [(0, result(2, T0 + 2.0)), (1, result(2, T0 + 2.0)), (2, result(1, None))]
    timings = ef.timings_from_results(rows)
    assert timings[0] == TrialTiming(0, 3.0, 2, T0 + 2.0, "host/1")
    assert timings[2] == TrialTiming(2, 3.0, 1, None, "host/1")
    e = study_efficiency(timings[:2], [DriverSession(T0, T0 + 6.0, 1)])
    assert e.session is not None and e.session.packs == 1
    assert e.session.ratio == pytest.approx(6.0 / 5.0)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow  # a study run and two reports: about 30 s on 2 loaded cores
def test_a_real_study_records_its_run_and_its_report_shows_the_efficiency(
    tmp_path: Path, cli_here: Callable[..., Done], in_process_executor: list[Any]
) -> None:
    """The 6-trial smoke shape at a tiny budget, through the real CLI and driver (packs
    trained in this process on 2 slots): the driver records its run, and `initstudy
    report` and `Study.report` put its measured efficiency in the footer."""
    from pipeline import api
    from pipeline.results import load_efficiency

    doc = yaml.safe_load(SMOKE_SPEC.read_text())
    doc["trial"].update(hidden=4, batches_per_epoch=3, max_epochs=2, val_size=32)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "runs"
    done = cli_here("run", str(spec), "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(in_process_executor) == 1

    url = f"sqlite:///{run_dir / 'optuna.db'}"
    stored = optuna.load_study(study_name="smoke", storage=url).user_attrs[st.SESSIONS]
    assert len(stored) == 1 and stored[0]["slots"] == 2
    assert stored[0]["started"] < stored[0]["ended"]

    e = load_efficiency("smoke", url)
    s = e.session
    assert e.measurable and len(e.sessions) == 1 and s is not None
    assert (s.trials, s.slots, e.trials) == (6, 2, 6)
    assert s.started == stored[0]["started"] and s.ended == stored[0]["ended"]
    assert s.startup_seconds is not None and s.wall_seconds is not None
    assert 0 <= s.startup_seconds < s.wall_seconds
    # in-process packs train one after another, so the wall is at least the training sum
    assert s.ratio is not None and s.ratio >= 0.99
    line = e.line()
    assert line.startswith("Wall ") and f"{s.ratio:.2f}x the floor" in line

    report = cli_here("report", "smoke", "--run-dir", str(run_dir))
    assert report.returncode == 0, report.stdout + report.stderr
    text = (run_dir / "reports" / "smoke" / "report.md").read_text(encoding="utf-8")
    assert text.endswith(f"\n---\n\n{line}\n")
    html = (run_dir / "reports" / "smoke" / "report.html").read_text(encoding="utf-8")
    assert f'<p class="efficiency">{line}</p>' in html
    files = api.open_study("smoke", run_dir=run_dir).report(tmp_path / "api", mlflow=False)
    assert files["markdown"].read_text(encoding="utf-8").endswith(f"\n---\n\n{line}\n")
