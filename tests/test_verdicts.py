"""The claim registry and :func:`pipeline.analysis.verdicts.judge`, verdicts' outputs
(``verdicts.json``, MLflow tags) and the re-reading of a study at another patience
(``with_patience``), on synthetic studies built from real TrialResults (tests/factories.py).

The rules themselves are tested by claim module: the speedup rule (C4 and declared
comparisons) in tests/test_verdicts_speedup.py, C1-C3 in tests/test_verdicts_init.py, C5-C6
in tests/test_verdicts_training.py (and tests/test_rules_c1.py, tests/test_rules_c6.py),
reproductions in tests/test_rules_reproduction.py; the trial outcome in
tests/test_outcomes.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from factories import (
    FIVE,
    N_BOOT,
    OK,
    OPTS,
    c2_runs,
    c5_runs,
    ending,
    gain_sweep,
    ortho_runs,
    race,
    result,
    study,
    up,
)

from models.spec import OUTCOMES, TrialResult
from pipeline.analysis import verdicts as vd
from pipeline.analysis.tables import StudyTables
from pipeline.analysis.verdicts import (
    NOT_MEASURED,
    REFUTED,
    SUPPORTED,
    VERDICTS,
    Verdict,
    judge,
)

# --------------------------------------------------------------------------- registry


def test_claims_registry_has_c1_to_c6_in_order_each_with_text_rule_and_judge() -> None:
    assert list(vd.CLAIMS) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    for claim_id, claim in vd.CLAIMS.items():
        assert claim.id == claim_id
        assert claim.text.strip() and claim.rule.strip()
        assert callable(claim.judge)
    assert vd.CLAIMS["C4"].rule == vd.SPEEDUP_RULE


def test_rule_texts_quote_the_thresholds_the_code_uses() -> None:
    assert f"fewer than {vd.MIN_N} trials" in vd.SPEEDUP_RULE
    assert f"first {vd.C1_EARLY_STEPS} steps" in vd.CLAIMS["C1"].rule
    assert f"exceeds {vd.C2_LOST_SATURATION:g}" in vd.CLAIMS["C2"].rule
    assert f"tolerance {vd.C2_TREND_TOLERANCE:g}" in vd.CLAIMS["C2"].rule
    assert f"below {vd.C2_VANISHED_VARIANCE:g} (vanished)" in vd.CLAIMS["C2"].rule
    assert f"hidden <= {vd.C5_TINY_HIDDEN}" in vd.CLAIMS["C5"].rule
    assert f"hidden >= {vd.C5_LARGE_HIDDEN}" in vd.CLAIMS["C5"].rule
    assert f"1 +- {vd.C6_NORM_TOLERANCE:g}" in vd.CLAIMS["C6"].rule


# --------------------------------------------------------------------------- judge()


def headline_study(**kw: Any) -> StudyTables:
    return study(race([3] * FIVE, [11, 12, 13, 12, 12]), **kw)


def test_judge_without_claims_returns_only_what_the_data_can_measure() -> None:
    tables = headline_study()
    measurable = [
        cid for cid, c in vd.CLAIMS.items() if c.judge(tables, OPTS).verdict != NOT_MEASURED
    ]
    verdicts = judge(tables, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == measurable == ["C1", "C4", "C6"]
    assert NOT_MEASURED not in {v.verdict for v in verdicts}


def test_judge_returns_all_six_when_the_data_measures_none() -> None:
    verdicts = judge(study([]), n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == list(vd.CLAIMS)
    for v in verdicts:
        assert v.verdict == NOT_MEASURED
        assert v.claim == vd.CLAIMS[v.claim_id].text
        assert v.rule == vd.CLAIMS[v.claim_id].rule
        assert "needs" in v.evidence


def test_judge_with_declared_claims_returns_exactly_those_in_order() -> None:
    tables = headline_study()
    verdicts = judge(tables, ["C5", "C4", "C1"], n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C5", "C4", "C1"]
    assert verdicts[0].verdict == NOT_MEASURED  # declared, so reported even so
    assert verdicts[1].verdict == SUPPORTED


def test_judge_reads_the_claims_declared_in_the_spec() -> None:
    spec = "claims:\n  - C4\n  - {faster: xavier, than: uniform01, by: [2, .inf]}\n"
    tables = headline_study(spec_text=spec)
    verdicts = judge(tables, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C4", "U2"]
    assert [v.verdict for v in verdicts] == [SUPPORTED, SUPPORTED]
    assert verdicts[1].claim == "xavier converges at least 2x faster than uniform01"


def test_judge_parses_raw_claim_entries() -> None:
    raw: list[Any] = [
        "C4",
        {"id": "mine", "faster": "xavier", "than": "uniform01", "by": [20, 40]},
    ]
    verdicts = judge(headline_study(), raw, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C4", "mine"]
    assert verdicts[1].verdict == REFUTED  # 4x is below 20x
    assert "Refuted as stated" not in verdicts[1].evidence  # that prefix is C4's


def test_judge_refuses_an_unknown_claim_id() -> None:
    with pytest.raises(ValueError, match="unknown claim"):
        judge(headline_study(), ["C7"], n_boot=N_BOOT)


# --------------------------------------------------------------------------- serialisation


def test_verdict_to_dict_has_exactly_the_record_keys() -> None:
    (v,) = judge(headline_study(), ["C4"], n_boot=N_BOOT)
    d = v.to_dict()
    assert set(d) == {"id", "text", "verdict", "rule", "evidence", "numbers"}
    assert (d["id"], d["text"], d["verdict"]) == ("C4", vd.CLAIMS["C4"].text, SUPPORTED)
    assert d["rule"] == vd.SPEEDUP_RULE and d["evidence"] == v.evidence


def test_verdict_numbers_are_made_json_safe() -> None:
    v = Verdict(
        "X",
        "text",
        SUPPORTED,
        "rule",
        "evidence",
        numbers={
            "nan": math.nan,
            "inf": math.inf,
            "minus_inf": -math.inf,
            "np_float": np.float64(1.5),
            "np_int": np.int64(2),
            "na": pd.NA,
            "none": None,
            "nested": {"list": [np.float64(math.nan), (1, np.bool_(True))]},
        },
    )
    numbers = json.loads(json.dumps(v.to_dict(), allow_nan=False))["numbers"]
    assert numbers == {
        "nan": None,
        "inf": "inf",
        "minus_inf": "-inf",
        "np_float": 1.5,
        "np_int": 2,
        "na": None,
        "none": None,
        "nested": {"list": [None, [1, True]]},
    }


TINY = vd.C5_TINY_HIDDEN


def every_claim_study() -> StudyTables:
    runs = race([3] * FIVE, [None] * FIVE, frozen=FIVE)  # C4: unbounded (inf)
    runs += gain_sweep({0.5: 0.2, 1.25: 0.8}, hidden=32)  # C3: no measured crossing (nan)
    runs += c2_runs({8: (0.2, 0.2, 0), 64: (1.0, 0.2, 0)}, first_seed=100)
    runs += c5_runs({(TINY, 5): (OK, OK), (128, 30): (["frozen"] * FIVE, OK)})
    runs += ortho_runs([1.0] * FIVE)
    return study(runs)


def test_every_verdict_serialises_with_allow_nan_false_and_write_verdicts_round_trips(
    tmp_path: Path,
) -> None:
    verdicts = judge(every_claim_study(), n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == list(vd.CLAIMS)  # the study measures all six
    for v in verdicts:
        assert v.verdict in VERDICTS
        json.dumps(v.to_dict(), allow_nan=False)
    path = vd.write_verdicts(verdicts, tmp_path / "out" / "verdicts.json")
    assert path == tmp_path / "out" / "verdicts.json"
    assert json.loads(path.read_text(encoding="utf-8")) == [v.to_dict() for v in verdicts]
    assert [p.name for p in path.parent.iterdir()] == ["verdicts.json"]  # no temp file left


def test_verdict_tags_name_each_claim() -> None:
    verdicts = judge(headline_study(), ["C4", "C5"], n_boot=N_BOOT)
    assert vd.verdict_tags(verdicts) == {
        "initstudy.verdict.C4": SUPPORTED,
        "initstudy.verdict.C5": NOT_MEASURED,
    }


# --------------------------------------------------------------------------- with_patience


def patience_study(*results: TrialResult) -> StudyTables:
    return study(list(results))


def test_with_patience_re_reads_convergence_at_a_shorter_patience() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    assert r.outcome == "converged"
    tables = patience_study(r)
    again = vd.with_patience(tables, 2)
    assert again.trials["converged_epoch"].tolist() == [4]
    shorter = vd.with_patience(tables, 1)
    assert shorter.trials["converged_epoch"].tolist() == [2]
    assert shorter.trials["outcome"].tolist() == ["converged"]
    assert tables.trials["converged_epoch"].tolist() == [4]  # the input is not changed


def test_with_patience_refuses_a_patience_longer_than_the_study_ran() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    with pytest.raises(ValueError, match="patience 3 cannot be re-read"):
        vd.with_patience(patience_study(r), 3)


@pytest.mark.parametrize(
    ("val_losses", "diverged", "patience", "epoch", "outcome"),
    [
        ([0.2, 0.01, 0.2], None, 1, 2, "converged"),  # at the target counts
        ([0.2, up(0.01), 0.2], None, 1, None, "censored"),
        ([0.2, 0.2, 0.2, 0.004, 0.004], None, 2, 4, "converged"),  # the last epochs
        ([0.2, 0.004, 0.2, 0.004, 0.2], None, 2, None, "censored"),
        ([0.2, 0.004, math.inf], 3, 1, 2, "converged"),  # before diverging
        ([0.2, 0.004, math.inf], 2, 1, 2, "converged"),  # the same epoch
        ([0.2, 0.2, 0.004, math.inf], 2, 1, None, "diverged"),  # after diverging
    ],
)
def test_with_patience_rule(
    val_losses: list[float],
    diverged: int | None,
    patience: int,
    epoch: int | None,
    outcome: str,
) -> None:
    r = result(val_losses=val_losses, target=0.01, diverged=diverged, patience=2)
    out = vd.with_patience(patience_study(r), patience).trials
    got = out["converged_epoch"].iloc[0]
    assert (None if pd.isna(got) else int(got)) == epoch
    assert out["outcome"].tolist() == [outcome]
    assert out["converged"].tolist() == [outcome == "converged"]
    assert out["censored"].tolist() == [outcome != "converged"]


def test_with_patience_keeps_frozen_trials_frozen() -> None:
    r = result(val_losses=[0.2, 0.004, 0.2], target=0.01, frozen=True)
    out = vd.with_patience(patience_study(r), 1).trials
    assert out["outcome"].tolist() == ["frozen"]
    assert out["converged_epoch"].isna().all()


def test_with_patience_agrees_with_the_trial_outcome_at_the_study_patience() -> None:
    results = [ending(o, seed=i) for i, o in enumerate(OUTCOMES)]
    tables = study(results)
    again = vd.with_patience(tables, 2).trials
    assert again["outcome"].tolist() == tables.trials["outcome"].tolist()
    assert again["converged_epoch"].tolist() == tables.trials["converged_epoch"].tolist()


def test_with_patience_moves_the_objective_value_with_the_converged_epoch() -> None:
    early = result(
        val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2
    )
    late = result(val_losses=[0.2, 0.004, *[0.2] * 38], target=0.01, seed=1)  # censored
    tables = patience_study(early, late)
    assert tables.trials["value"].tolist() == [4.0, 41.0]  # max_epochs + 1 when censored
    out = vd.with_patience(tables, 1).trials
    assert out["converged_epoch"].tolist() == [2, 2]
    assert out["value"].tolist() == [2.0, 2.0]


def test_with_patience_keeps_a_value_that_is_not_epochs_to_converge() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    tables = patience_study(r)
    tables.trials["value"] = [0.123]  # a study scored by another objective
    assert vd.with_patience(tables, 1).trials["value"].tolist() == [0.123]
