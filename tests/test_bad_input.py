"""Bad input through the real CLI: one clear line, a non-zero exit, nothing left behind.

One table of malformed inputs (spec files, CLI flags, storage URLs, corpus files and
hostile ``initstudy query`` strings). Each case writes its input files into ``tmp_path``,
runs ``pipeline.cli.main(argv)`` in this process (the console script's own entry point,
so usage errors are formatted as in a shell), and checks:

- the exit code: 2 for bad input (the spec, an option, a URL, a file, a study name);
  1 for a query DuckDB refuses or cannot run (the input was well formed; ``query``
  documents exit 1 for that);
- exactly one non-empty line on stderr (no traceback, no usage box) containing the
  fragments that name what is wrong (the field, the option, the file);
- no file created or changed in ``tmp_path`` (the working directory) besides the inputs,
  and for query cases the smoke study's run folder byte-identical afterwards, the
  Optuna database included.

A few cases also run as a real subprocess, and a property-based test feeds generated
specs to ``initstudy validate``: exit 0 with the right trial count, or exit 2 with one
line, never a traceback.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import invoke_cli as invoke
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ports import free_port
from typer.testing import CliRunner

from pipeline import cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_tiny.yaml"
CLI = [sys.executable, "-m", "pipeline.cli"]
DIR = object()
"""A ``files`` value: make a directory of that name instead of a file."""
FIFO = object()
"""A ``files`` value: make a FIFO (named pipe) of that name: reading it would block."""
BIG = str(10**400)


@dataclass(frozen=True)
class Case:
    """One malformed input. ``{tmp}``, ``{run}``, ``{smoke}`` and ``{port}`` in ``argv``
    and in text files stand for tmp_path, the smoke study's run folder, studies/smoke.yaml
    and a closed TCP port on 127.0.0.1."""

    id: str
    argv: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_run(self) -> bool:
        return any("{run}" in a for a in self.argv)


def case(id: str, argv: str | list[str], code: int, *fragments: str, **files: Any) -> Case:
    args = tuple(argv.split()) if isinstance(argv, str) else tuple(argv)
    return Case(id, args, code, fragments, {k.replace("__", "."): v for k, v in files.items()})


def spec_case(id: str, text: str | bytes, *fragments: str, command: str = "run") -> Case:
    """A spec file bad.yaml with ``text``, given to ``command`` (run by default)."""
    argv = f"{command} {{tmp}}/bad.yaml --run-dir {{tmp}}/runs"
    return case(id, argv, 2, *fragments, bad__yaml=text)


def alias_bomb(levels: int = 9) -> str:
    """A 'billion laughs' document: 9 ** levels values once the aliases are expanded."""
    node = '&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for i in range(1, levels):
        node = f"&a{i} [{node}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    return f"name: bomb\nspace:\n  init: {node}\n"


HUGE_GRID = """\
name: huge
trial: {task: adding, hidden: 256, max_epochs: 100}
space:
  seq_len: {low: 10, high: 200}   # 191 values
  seed: {low: 0, high: 99}        # x 100 = 19,100 trials
"""
LONG_TRIALS = """\
name: long
trial: {task: adding, hidden: 512, max_epochs: 20000, seq_len: 500}
space:
  seed: [0, 1, 2]
"""
CHARLM = """\
name: c
trial: {{task: charlm, corpus: '{corpus}', max_epochs: 1}}
space: {{seq_len: [5]}}
"""

CASES: list[Case] = [
    # ---- spec files: YAML
    spec_case("yaml syntax", "name: x\nspace: [unclosed\n", "bad.yaml", "invalid YAML", "line"),
    spec_case(
        "yaml python tag",
        "name: x\nspace: !!python/object/apply:os.system ['touch {tmp}/pwned']\n",
        "invalid YAML",
        "python/object",
    ),
    spec_case("yaml alias bomb", alias_bomb(), "invalid YAML", "alias"),
    spec_case("yaml recursive alias", "name: x\nspace:\n  init: &a [xavier, *a]\n", "alias"),
    spec_case("yaml nested too deep", "name: x\ndescription: " + "[" * 3000, "nested too deeply"),
    spec_case("top level is a list", "- name: x\n- sampler: grid\n", "<top>", "mapping"),
    spec_case("empty spec", "", "<top>", "empty document"),
    spec_case("binary spec", b"name: x\x00\x01\x02\n", "bad.yaml", "binary"),
    spec_case("spec not utf-8", b"name: caf\xe9\n", "bad.yaml", "UTF-8"),
    case("spec is a directory", "validate {tmp}/specs", 2, "specs", "directory", specs=DIR),
    case("spec missing", "run {tmp}/nope.yaml --run-dir {tmp}/runs", 2, "nope.yaml", "not found"),
    case("spec is a fifo", "validate {tmp}/p.yaml", 2, "p.yaml", "FIFO", "regular", p__yaml=FIFO),
    case("spec is /dev/zero", "run /dev/zero --run-dir {tmp}/r", 2, "/dev/zero", "device"),
    spec_case("spec too large", b"# " + b"x" * 1_000_000 + b"\n", "bad.yaml", "larger than"),
    spec_case("duplicate top key", "name: x\nname: y\n", "line 2", "duplicate key 'name'"),
    spec_case(
        "duplicate trial key",
        "name: x\ntrial:\n  hidden: 8\n  seq_len: 5\n  hidden: 9\n",
        "line 5",
        "duplicate key 'hidden' (first at line 3)",
    ),
    spec_case("integer of 5000 digits", f"name: x\nn_trials: {'9' * 5000}\n", "too long"),
    # ---- spec files: types, keys, ranges
    spec_case("wrong type hidden", "name: x\ntrial: {hidden: abc}\n", "trial.hidden", "integer"),
    spec_case(
        "wrong type n_trials",
        "name: x\nsampler: random\nn_trials: many\n",
        "n_trials",
        "integer",
    ),
    spec_case("yaml 1e-3 is text", "name: x\ntrial: {lr: 1e-3}\n", "trial.lr", "write 1.0e-3"),
    spec_case("unknown top key", "nmae: x\n", "nmae", "unknown key", "allowed"),
    spec_case("unknown trial field", "name: x\ntrial: {hiden: 8}\n", "trial.hiden", "allowed"),
    spec_case(
        "unknown space key",
        "name: x\nspace: {batch_size: [8, 16]}\n",
        "space.batch_size",
        "searchable",
    ),
    spec_case("unknown sampler", "name: x\nsampler: annealing\n", "sampler", "grid"),
    spec_case(
        "unknown init scheme",
        "name: x\nspace: {init: [xavier, bogus]}\n",
        "space.init[1]",
        "known: ",
    ),
    spec_case("hidden zero", "name: x\ntrial: {hidden: 0}\n", "trial.hidden", ">= 1"),
    spec_case("hidden 10**400", f"name: x\ntrial: {{hidden: {BIG}}}\n", "trial.hidden", "<= 4096"),
    spec_case(
        "n_trials 10**400",
        f"name: x\nsampler: random\nn_trials: {BIG}\n",
        "n_trials",
        "<= 1000000",
        command="validate",
    ),
    spec_case("val_size 10**8", "name: x\ntrial: {val_size: 100000000}\n", "val_size", "65536"),
    spec_case(
        "sizes too large together",
        "name: x\ntrial: {batch_size: 4096}\nspace: {seq_len: [10, 5000]}\n",
        "trial.batch_size",
        "batch_size x seq_len",
        command="validate",
    ),
    spec_case(
        "range low above high",
        "name: x\nsampler: random\nn_trials: 3\nspace: {scale: {low: 2.0, high: 1.0}}\n",
        "space.scale.low",
        "<= high",
    ),
    spec_case("negative sampler seed", "name: x\nsampler_seed: -1\n", "sampler_seed"),
    spec_case(
        "float range on a grid",
        "name: x\nspace: {scale: {low: 0.5, high: 2.0}}\n",
        "space.scale",
        "grid",
    ),
    spec_case(
        "grid over the cap",
        "name: x\nspace: {seed: {low: 0, high: 999}, seq_len: {low: 1, high: 200}}\n",
        "space",
        "100000",
    ),
    spec_case("name with a path", "name: ../evil\n", "name", "path separators"),
    spec_case("huge grid without --yes", HUGE_GRID, "19,100 trials", "--yes"),
    spec_case("days of training without --yes", LONG_TRIALS, "3 trials", "CPU-hours", "--yes"),
    # ---- CLI flags
    case("run --workers 0", "run {smoke} --workers 0 --run-dir {tmp}/r", 2, "--workers", "from 1"),
    case("run --workers abc", "run {smoke} --workers abc --run-dir {tmp}/r", 2, "--workers"),
    case(
        "run --gpus-per-trial -1",
        "run {smoke} --gpus-per-trial -1 --run-dir {tmp}/r",
        2,
        "--gpus-per-trial",
        ">= 0",
    ),
    case("run --cpus-per-trial 0", "run {smoke} --cpus-per-trial 0", 2, "--cpus-per-trial"),
    case("run --pack-size 0", "run {smoke} --pack-size 0", 2, "--pack-size"),
    case("run unknown option", "run {smoke} --wrokers 2", 2, "--wrokers", "initstudy run --help"),
    case("run missing spec", "run", 2, "SPEC"),
    case("run --address", ["run", "{smoke}", "--address", "not an address"], 2, "--address"),
    case("run --study-name ../x", "run {smoke} --study-name ../x", 2, "--study-name"),
    case("run --study-name ..", "run {smoke} --study-name ..", 2, "--study-name"),
    case("run --study-name markup", ["run", "{smoke}", "--study-name", "[/]"], 2, "'[/]'"),
    case("run --run-dir is a file", "run {smoke} --run-dir {tmp}/f", 2, "--run-dir", f="x"),
    case("trial --hidden 0", "trial --hidden 0", 2, "--hidden"),
    case("trial --seed 2**64", f"trial --seed {2**64}", 2, "--seed", "2**32 - 1"),
    case("trial --seq-len 10**20", f"trial --seq-len {10**20}", 2, "--seq-len", "<= 10000"),
    case("trial --batch-size 10**9", f"trial --batch-size {10**9}", 2, "--batch-size", "4096"),
    case("trial --hidden 10**6", f"trial --hidden {10**6}", 2, "--hidden", "<= 4096"),
    case("trial --val-size 10**8", "trial --val-size 100000000", 2, "--val-size", "65536"),
    case(
        "trial sizes too large together",
        "trial --batch-size 4096 --seq-len 2000",
        2,
        "--batch-size",
        "batch_size x seq_len",
    ),
    case("trial --device tpu", "trial --device tpu", 2, "--device", "cuda"),
    case("results --format xml", "results smoke --format xml", 2, "--format", "parquet"),
    case("results --table nope", "results smoke --table nope", 2, "--table", "epochs"),
    case(
        "results parquet to stdout", "results smoke --format parquet --run-dir {run}", 2, "--out"
    ),
    case(
        "query --format parquet",
        ["query", "smoke", "SELECT 1", "--format", "parquet"],
        2,
        "--format",
    ),
    case(
        "results --out under a file",
        "results smoke --format csv --out {tmp}/f/x.csv --run-dir {run}",
        2,
        "--out",
        f="x",
    ),
    case(
        "report --out under a file",
        "report smoke --out {tmp}/f/report --run-dir {run}",
        2,
        "--out",
        f="x",
    ),
    case("status bad study name", "status ../../x --run-dir {tmp}", 2, "STUDY", "'../../x'"),
    case("report bad study name", "report ../x --run-dir {tmp}", 2, "STUDY"),
    case("results study ..", "results .. --run-dir {tmp}", 2, "STUDY"),
    case("status no storage", "status smoke --run-dir {tmp}/none", 2, "optuna.db"),
    # ---- storage URLs
    case(
        "storage mongodb", "run {smoke} --storage mongodb://localhost/x", 2, "--storage", "sqlite"
    ),
    case("storage sqlite no slashes", "run {smoke} --storage sqlite:x.db", 2, "--storage"),
    case("storage sqlite in memory", "run {smoke} --storage sqlite://", 2, "--storage", "file"),
    case("storage sqlite host", "run {smoke} --storage sqlite://x.db", 2, "--storage", "file"),
    case(
        "storage postgres closed port",
        "run {smoke} --run-dir {tmp}/r"
        " --storage postgresql+psycopg://u:hunter2@127.0.0.1:{port}/db",
        2,
        "Optuna storage",
        "u:***@127.0.0.1",
    ),
    case("tracking ftp", "run {smoke} --tracking-uri ftp://x/y", 2, "--tracking-uri"),
    case(
        "read storage file missing",
        "status smoke --storage sqlite:///{tmp}/nope/optuna.db",
        2,
        "--storage",
        "no database file",
    ),
    # ---- corpus files
    case("corpus missing", "trial --task charlm --corpus {tmp}/none.txt", 2, "--corpus", "exist"),
    case(
        "corpus empty",
        "trial --task charlm --corpus {tmp}/c.txt",
        2,
        "--corpus",
        "empty",
        c__txt=b"",
    ),
    case(
        "corpus binary",
        "trial --task charlm --corpus {tmp}/c.txt",
        2,
        "--corpus",
        "binary",
        c__txt=b"ab\x00cd" * 100,
    ),
    case(
        "corpus not utf-8",
        "trial --task charlm --corpus {tmp}/c.txt",
        2,
        "--corpus",
        "UTF-8",
        c__txt=b"\xff\xfe\xfa" * 100,
    ),
    case(
        "corpus a directory",
        "trial --task charlm --corpus {tmp}/d",
        2,
        "--corpus",
        "directory",
        d=DIR,
    ),
    spec_case(
        "spec corpus missing",
        CHARLM.format(corpus="{tmp}/none.txt"),
        "trial.corpus",
        "exist",
        command="validate",
    ),
    case(
        "spec corpus binary",
        "run {tmp}/bad.yaml --run-dir {tmp}/runs",
        2,
        "trial.corpus",
        "binary",
        bad__yaml=CHARLM.format(corpus="{tmp}/c.txt"),
        c__txt=b"\x00" * 100,
    ),
    # ---- query strings (exit 2: bad input DuckDB refused), against a real study
    case(
        "query COPY TO file",
        ["query", "smoke", "COPY trials TO '{tmp}/out.csv'", "--run-dir", "{run}"],
        2,
        "query:",
        "disabled",
    ),
    case(
        "query COPY TO parquet",
        [
            "query",
            "smoke",
            "COPY (SELECT 1) TO '{tmp}/o.parquet' (FORMAT parquet)",
            "--run-dir",
            "{run}",
        ],
        2,
        "disabled",
    ),
    case(
        "query EXPORT DATABASE",
        ["query", "smoke", "EXPORT DATABASE '{tmp}/exp'", "--run-dir", "{run}"],
        2,
        "disabled",
    ),
    case(
        "query ATTACH optuna.db",
        ["query", "smoke", "ATTACH '{run}/optuna.db' AS o", "--run-dir", "{run}"],
        2,
        "disabled",
    ),
    case(
        "query ATTACH then DELETE",
        [
            "query",
            "smoke",
            "ATTACH '{run}/optuna.db' AS o; DELETE FROM o.trials",
            "--run-dir",
            "{run}",
        ],
        2,
        "disabled",
    ),
    case(
        "query DROP TABLE trials",
        ["query", "smoke", "DROP TABLE trials", "--run-dir", "{run}"],
        2,
        "query:",
        "trials",
    ),
    case(
        "query read_csv /etc/passwd",
        ["query", "smoke", "SELECT * FROM read_csv('/etc/passwd')", "--run-dir", "{run}"],
        2,
        "disabled",
    ),
    case(
        "query replacement scan of a file",
        ["query", "smoke", "SELECT * FROM '{run}/optuna.db'", "--run-dir", "{run}"],
        2,
        "query:",
    ),
    case(
        "query INSTALL extension",
        ["query", "smoke", "INSTALL sqlite", "--run-dir", "{run}"],
        2,
        "query:",
    ),
    case(
        "query unlock configuration",
        ["query", "smoke", "SET enable_external_access = true", "--run-dir", "{run}"],
        2,
        "locked",
    ),
    case(
        "query syntax error",
        ["query", "smoke", "SELEC nonsense", "--run-dir", "{run}"],
        2,
        "query:",
        "syntax error",
    ),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: relative path -> sha256 (folders: '').

    SQLite's companions of a database in write-ahead-log mode are left out while they
    hold nothing: ``-shm`` (the readers' shared index, which any reader creates) and an
    empty ``-wal``. A ``-wal`` with content is a write, and shows up as an added file.
    (They exist only while a connection is open; this test runs the CLI in-process.)
    """
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel.endswith("-shm") or (rel.endswith("-wal") and path.stat().st_size == 0):
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return out


def prepare(bad: Case, tmp_path: Path, run_dir: Path | None) -> list[str]:
    """Write the case's files; return its argv with the placeholders filled in."""
    values = {
        "{tmp}": str(tmp_path),
        "{run}": str(run_dir),
        "{smoke}": str(SMOKE),
        "{port}": str(free_port()),
    }

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    for name, content in bad.files.items():
        path = tmp_path / name
        if content is DIR:
            path.mkdir()
        elif content is FIFO:
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(fill(content), encoding="utf-8")
    return [fill(arg) for arg in bad.argv]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "bad",
    [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.needs_run else []) for c in CASES],
)
def test_bad_input_gives_one_line_and_leaves_nothing(
    bad: Case,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = request.getfixturevalue("smoke_run") if bad.needs_run else None
    argv = prepare(bad, tmp_path, run_dir)
    inputs = snapshot(tmp_path)
    stores = snapshot(run_dir) if run_dir is not None else {}
    monkeypatch.chdir(tmp_path)  # a default ./runs would show up in tmp_path

    code = invoke(argv)

    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == bad.code, (code, err)
    assert len(lines) == 1, err
    for fragment in bad.fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err + out
    assert snapshot(tmp_path) == inputs
    if run_dir is not None:
        assert snapshot(run_dir) == stores  # optuna.db byte-identical, nothing added


def test_secrets_in_urls_are_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://u:hunter2@127.0.0.1:{free_port()}/db"
    assert invoke(["run", str(SMOKE), "--storage", url, "--run-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err


REAL_PROCESS = ["yaml syntax", "run --workers abc", "storage postgres closed port"]


@pytest.mark.slow
@pytest.mark.parametrize("bad", [c for c in CASES if c.id in REAL_PROCESS], ids=REAL_PROCESS)
def test_a_real_process_prints_the_same_one_line(bad: Case, tmp_path: Path) -> None:
    argv = prepare(bad, tmp_path, None)
    inputs = snapshot(tmp_path)
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == bad.code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert all(fragment in lines[0] for fragment in bad.fragments), lines[0]
    assert snapshot(tmp_path) == inputs


# ---------------------------------------------------------------- large studies and --yes


def test_validate_warns_about_a_huge_study_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE_GRID)
    assert invoke(["validate", str(spec), "--run-dir", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "trials: 19100" in out
    assert "warning:" in out and "19,100 trials" in out and "--yes" in out
    assert "days" in out
    assert err == ""
    assert [p.name for p in tmp_path.iterdir()] == ["huge.yaml"]


def test_validate_does_not_warn_about_the_headline_study(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert invoke(["validate", str(ROOT / "studies" / "headline.yaml"), "--run-dir", "/nx"]) == 0
    out, _ = capsys.readouterr()
    assert "training time: up to about" in out
    assert "warning" not in out


def test_yes_lets_a_huge_study_past_the_size_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --yes the size check passes and the run goes on (here to a closed database)."""
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE_GRID)
    url = f"postgresql+psycopg://u@127.0.0.1:{free_port()}/db"
    argv = ["run", str(spec), "--yes", "--storage", url, "--run-dir", str(tmp_path / "r")]
    assert invoke(argv) == 2
    out, err = capsys.readouterr()
    assert "19,100 trials" in out and "--yes" in out
    assert "Optuna storage" in err
    assert [p.name for p in tmp_path.iterdir()] == ["huge.yaml"]


# ---------------------------------------------------------------- generated specs, via the CLI

GOOD: dict[str, list[Any]] = {
    "init": ["xavier", "uniform01", "orthogonal"],
    "init_recurrent": ["orthogonal", None],
    "cell": ["rnn_tanh", "lstm", "gru"],
    "optimizer": ["adam", "sgd"],
    "seq_len": [2, 5, 10],
    "hidden": [4, 8, 16],
    "seed": [0, 1, 2, 3],
    "scale": [0.5, 1.0, 2.0],
    "lr": [0.001, 0.01],
    "clip": [1.0, None],
}
BAD: list[Any] = ["bogus", -1, 0, 1.5, None, True, "1e-3", [], {}, "../x", math.inf]


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` five times in six, else ``bad``."""
    return st.integers(0, 5).flatmap(lambda i: bad if i == 0 else good)


@st.composite
def space_entries(draw: st.DrawFn, key: str) -> Any:
    pool = GOOD.get(key, [1, 2])
    kind = draw(st.sampled_from(["list", "list", "range", "scalar"]))
    item = mostly(st.sampled_from(pool), st.sampled_from(BAD))
    if kind == "list":
        return draw(st.lists(item, min_size=0, max_size=4, unique_by=repr))
    if kind == "scalar":
        return draw(item)
    low = draw(mostly(st.integers(1, 40), st.sampled_from(BAD)))
    high = draw(mostly(st.integers(1, 60), st.sampled_from(BAD)))
    rng: dict[str, Any] = {"low": low, "high": high}
    if draw(st.booleans()):
        rng["step"] = draw(st.sampled_from([1, 2, 3, 0, -1, 0.5]))
    if draw(st.integers(0, 3)) == 0:
        rng["log"] = draw(st.sampled_from([True, False, "yes"]))
    if draw(st.integers(0, 5)) == 0:
        rng[draw(st.sampled_from(["type", "lg"]))] = draw(st.sampled_from(["int", "float"]))
    return rng


@st.composite
def spec_documents(draw: st.DrawFn) -> str:
    """YAML text: mostly a generated spec mapping, sometimes arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))
    keys = draw(
        st.lists(mostly(st.sampled_from(list(GOOD)), st.just("bogus")), max_size=4, unique=True)
    )
    sampler = draw(mostly(st.sampled_from(["grid", "grid", "random", "tpe"]), st.just("nope")))
    spec: dict[str, Any] = {
        "name": draw(mostly(st.sampled_from(["ok", "a.b-c_1"]), st.sampled_from(BAD))),
        "sampler": sampler,
        "space": {key: draw(space_entries(key)) for key in keys},
    }
    if sampler != "grid" or draw(st.booleans()):
        n_trials = draw(mostly(st.sampled_from([1, 3, 10, 5000]), st.sampled_from(BAD)))
        if n_trials is not None:
            spec["n_trials"] = n_trials
    if draw(st.booleans()):
        spec["trial"] = {
            "task": draw(mostly(st.sampled_from(["adding", "copy", "charlm"]), st.just("x"))),
            "max_epochs": draw(mostly(st.integers(1, 5), st.sampled_from(BAD))),
            "batches_per_epoch": draw(mostly(st.integers(1, 50), st.sampled_from(BAD))),
        }
    return yaml.safe_dump(spec, sort_keys=False)


def expected_trials(data: dict[str, Any]) -> int:
    """The trial count of an accepted spec, from the raw mapping (independent of StudySpec)."""
    if data.get("sampler", "grid") != "grid":
        return int(data["n_trials"])
    size = 1
    for entry in (data.get("space") or {}).values():
        if isinstance(entry, list):
            size *= len(entry)
        elif isinstance(entry, dict):
            step = 1 if entry.get("log") else int(entry.get("step") or 1)
            size *= (int(entry["high"]) - int(entry["low"])) // step + 1
    return int(data.get("n_trials") or size)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_documents())
def test_validate_accepts_with_the_right_count_or_refuses_cleanly(text: str) -> None:
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "spec.yaml").write_text(text, encoding="utf-8")
        result = runner.invoke(
            cli.app, ["validate", str(folder / "spec.yaml"), "--run-dir", str(folder / "runs")]
        )
        assert sorted(p.name for p in folder.iterdir()) == ["spec.yaml"]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    if result.exit_code == 2:
        event("refused")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return
    event("accepted")
    data = yaml.safe_load(text)
    assert f"trials: {expected_trials(data)}\n" in result.stdout
    # an accepted spec may be warned about (a TPE study within its random start), no more
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), result.stderr
