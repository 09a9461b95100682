"""Fuzzing the CLI: whatever a user passes, one clear line or a result, never worse.

Two property tests (Hypothesis) run the real CLI in this process (``pipeline.cli.main``,
the console script's entry point, so usage errors are formatted as in a shell):

- at least 1,000 generated spec documents (valid ones and wrong types, huge integers,
  NaN and infinities, unknown keys, nested garbage, long strings, duplicate keys, broken
  YAML) given to ``initstudy validate``;
- at least 1,000 generated argument lists for ``validate``, ``trial`` and ``run`` with
  bad option values (each ``trial`` and ``run`` list holds at least one value that must be
  refused, so nothing trains and no study starts).

Each example must exit 0 (a validated spec) or 2 with exactly one ``error:`` line on
stderr; never raise anything but ``SystemExit`` (a traceback), never run past a
per-example deadline (a hang), and never leave a file behind in its working folder.

Rich markup and control characters (:data:`HOSTILE`) are drawn for every free-text spec
field (``name``, ``description``, ``claim``, a reproduction's ``source``, the values of
its arms and ``where``), among the scalars anywhere, and for study names (``--study-name``
and, in a third test, every command's STUDY argument): nothing a terminal would act on
may come out (no ESC, BEL or other control character but newline and tab), and markup
never breaks the printing (Rich's ``MarkupError`` would be a traceback).
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.fields import FIELDS, SEARCHABLE
from pipeline import cli
from pipeline.cli.trial import option_name

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_tiny.yaml"
EXAMPLE_SECONDS = 20.0
"""Per-example deadline: an example still running then is a hang."""
FUZZ = settings(
    max_examples=1000,
    deadline=None,  # the deadline is EXAMPLE_SECONDS of wall time, enforced by SIGALRM
    database=None,  # no .hypothesis folder in the working folder the test checks
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

pytestmark = pytest.mark.slow  # about 20 s each on one core


class Hang(BaseException):
    """An example ran past its deadline (a BaseException: no ``except Exception`` eats it)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in this (the main) thread after ``seconds``; the alarm that was
    set before (pytest-timeout's) is set again afterwards, less the time spent."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


Run = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``initstudy ARGV`` in this process, in ``tmp_path`` (the working folder), under the
    deadline; returns (exit code, stdout, stderr). An exception other than SystemExit (a
    traceback in a shell) fails the test."""
    monkeypatch.chdir(tmp_path)
    # Typer builds the click command on every call (most of an example's time): build once
    real, built = typer.main.get_command, typer.main.get_command(cli.app)
    monkeypatch.setattr(typer.main, "get_command", lambda a: built if a is cli.app else real(a))

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        with monkeypatch.context() as env, deadline(EXAMPLE_SECONDS):
            for name in [n for n in os.environ if n.startswith("INITSTUDY_")]:
                env.delenv(name)
            try:
                cli.main(argv)
            except SystemExit as exc:
                code = exc.code
            else:  # pragma: no cover - main always exits
                code = 0
        out, err = capsys.readouterr()
        return (0 if code is None else code if isinstance(code, int) else 1), out, err

    return run


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What a terminal would act on (ESC, BEL, CR, C1 codes, bidirectional overrides)."""


def check_outcome(code: int, out: str, err: str, *, refused: bool = False) -> None:
    """Exit 0 (warnings at most on stderr) or 2 with exactly one ``error:`` line, and
    nothing a terminal would act on."""
    assert "Traceback" not in out + err, out + err
    assert not CONTROL.search(out + err), repr(out + err)
    lines = [line for line in err.splitlines() if line.strip()]
    if refused or code != 0:
        assert code == 2, (code, out, err)
        assert len(lines) == 1, err
        assert lines[0].startswith("error: "), err
        event("refused")
    else:
        assert all(line.startswith("warning: ") for line in lines), err
        event("accepted")


# ---------------------------------------------------------------- spec documents

HUGE = [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 10**20, 10**9, 100_000_000]
ODD_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]
LONG = ["x" * 10_000, "é" * 1000, "a\tb\\nc" * 100]
NAMES = ["xavier", "uniform01", "orthogonal", "lstm", "gru", "rnn_tanh", "adam", "sgd"]
NAMES += ["adding", "copy", "charlm", "bogus", "", "../x", "[/]", "null"]
HOSTILE = [
    "[/red] x",
    "[/]",
    "[bold]unclosed",
    "[link=http://evil.example]cl[/link]",
    "\x1b]0;PWNED\x07",
    "\x1b]8;;http://evil.example\x1b\\cl\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[H",
    "a\rb\x08\x7f\x9b31m\u202etxt",
    "x\\",
    "{task.fields} %s {0}",
    "<!-- results:end -->",
]
"""Rich markup, terminal escapes (title, hyperlink, clear-screen), control characters,
a trailing backslash, format fields and a README marker."""
hostile = st.sampled_from(HOSTILE) | st.builds(
    "".join, st.lists(st.sampled_from(HOSTILE), max_size=3)
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=12),
    st.sampled_from(LONG),
    st.sampled_from(NAMES),
    hostile,
)
garbage = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=6,
)


def good_value(name: str) -> st.SearchStrategy[Any]:
    """Small values of a field's type, mostly valid (and cheap to validate)."""
    field = FIELDS[name]
    if field.registry is not None:
        return st.sampled_from(NAMES)
    if field.kind is bool:
        return st.booleans()
    if field.kind is int:
        return st.integers(0, 40)
    if field.kind is float:
        return st.floats(0, 4)
    return st.none() | st.text(max_size=8) | hostile


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else garbage."""
    return st.integers(0, 3).flatmap(lambda i: garbage if i == 0 else good)


@st.composite
def space_entry(draw: st.DrawFn, name: str) -> Any:
    good = good_value(name)
    shape = draw(st.sampled_from(["list", "list", "range", "scalar", "garbage"]))
    if shape == "list":
        return draw(st.lists(mostly(good), max_size=4))
    if shape == "range":
        entry: dict[str, Any] = {"low": draw(mostly(good)), "high": draw(mostly(good))}
        for key in draw(st.lists(st.sampled_from(["step", "log", "type", "lw"]), max_size=2)):
            entry[key] = draw(garbage | st.sampled_from([1, 2, 0.5, True, "int", "float"]))
        return entry
    return draw(mostly(good) if shape == "scalar" else garbage)


TOP = ["name", "description", "claim", "claims", "sampler", "n_trials", "sampler_seed"]
TOP += ["sampler_options", "objective", "protocol", "nmae"]
ARM = st.fixed_dictionaries(
    {"init": st.sampled_from(["xavier", "uniform01"])},
    optional={"cell": st.sampled_from(["rnn_tanh", "lstm"]) | hostile, "task": hostile},
)


@st.composite
def claim_entry(draw: st.DrawFn) -> Any:
    """A built-in id, a comparison or a reproduction, with hostile text where text goes."""
    kind = draw(st.sampled_from(["id", "comparison", "reproduction", "reproduction"]))
    if kind == "id":
        return draw(st.sampled_from(["C1", "C4", "C6"]) | hostile)
    entry: dict[str, Any] = {}
    if draw(st.booleans()):
        entry["id"] = draw(st.sampled_from(["u1", "r.1"]) | hostile)
    if draw(st.booleans()):
        entry["where"] = {draw(st.sampled_from(["cell", "task", "seq_len"])): draw(hostile)}
    if kind == "comparison":
        faster = draw(st.sampled_from(["xavier", "orthogonal"]) | hostile)
        return entry | {"faster": faster, "than": "uniform01", "by": [2, 10]}
    entry["source"] = draw(hostile)
    side = draw(st.sampled_from(["learn", "stay"]))
    return entry | {side: draw(st.lists(ARM, min_size=1, max_size=2, unique_by=str))}


@st.composite
def spec_document(draw: st.DrawFn) -> str:
    """YAML text of a spec: mostly a generated mapping, mutated now and then."""
    names = st.sampled_from(["ok", "a.b-c_1"])
    doc: dict[Any, Any] = {"name": draw(mostly(names | hostile))}
    for key in draw(st.lists(st.sampled_from(TOP), max_size=4, unique=True)):
        good: dict[str, st.SearchStrategy[Any]] = {
            "sampler": st.sampled_from(["grid", "random", "qmc", "tpe"]),
            "n_trials": st.integers(1, 20),
            "sampler_seed": st.integers(0, 10),
            "description": st.text(max_size=20) | hostile,
            "claim": hostile,
            "claims": st.lists(claim_entry(), min_size=1, max_size=3),
            "objective": st.just({"metric": "best_val_loss"}),
            "protocol": st.just({"kind": "fixed"}),
        }
        doc[key] = draw(mostly(good.get(key, garbage)))
    if draw(st.booleans()):
        names = st.sampled_from([*FIELDS, "hiden"])
        doc["trial"] = {n: draw(mostly(good_value(n) if n in FIELDS else garbage))
                        for n in draw(st.lists(names, max_size=4, unique=True))}  # fmt: skip
    if draw(st.booleans()):
        names = st.sampled_from([*SEARCHABLE, "batch_size"])
        doc["space"] = {n: draw(space_entry(n)) for n in draw(st.lists(names, max_size=3))}
    if draw(st.integers(0, 9)) == 0:
        doc = draw(garbage)  # not a mapping of study fields at all
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    mutation = draw(st.integers(0, 11))
    if mutation == 0:  # a key given twice
        text += draw(st.sampled_from(["name: again\n", "trial: {}\n", "space: {}\n"]))
    elif mutation == 1:  # cut short anywhere
        text = text[: draw(st.integers(0, len(text)))]
    elif mutation == 2:  # arbitrary text
        text = draw(st.text(max_size=80))
    return text


@FUZZ
@given(spec_document())
def test_validate_accepts_or_refuses_every_generated_spec_in_one_line(
    run_cli: Run, tmp_path: Path, text: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = listing(tmp_path)
    code, out, err = run_cli(["validate", str(spec), "--run-dir", str(tmp_path / "runs")])
    check_outcome(code, out, err)
    if code == 0:
        assert "trials: " in out
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- argument lists

BAD_TEXT = ["abc", "", "-1", "-5", "0x10", "1.5", "nan", "inf", "-inf", "1e999", "null"]
BAD_TEXT += ["true", "9" * 5000, str(10**400), str(2**64), "1" * 25, "x" * 5000, "--", "é"]


def bad_value(name: str) -> str:
    """A value the ``trial`` option of field ``name`` must refuse."""
    field = FIELDS[name]
    if field.kind in (int, float):
        return "-1"  # every number's low is 0 or more
    if field.kind is bool:
        return "maybe"
    return "bogus" if field.registry is not None else "/nonexistent/corpus.txt"


TRIAL_OPTIONS = [option_name(n) for n in FIELDS] + ["--device", "--json", "--hiden"]
TINY = ["--hidden", "2", "--seq-len", "3", "--batches-per-epoch", "1", "--max-epochs", "1"]
TINY += ["--val-size", "8"]


@st.composite
def trial_argv(draw: st.DrawFn) -> list[str]:
    """``trial`` with tiny settings, some random options and at least one refused value."""
    argv = ["trial", *TINY]
    for option in draw(st.lists(st.sampled_from(TRIAL_OPTIONS), max_size=3)):
        argv += [option, draw(st.sampled_from(BAD_TEXT) | st.text(max_size=10))]
    field = draw(st.sampled_from(list(FIELDS)))
    sure = draw(st.sampled_from(["field", "device", "huge", "unknown", "sizes"]))
    if sure == "field":
        argv += [option_name(field), bad_value(field)]
    elif sure == "device":
        argv += ["--device", draw(st.sampled_from(["tpu", "cuda:x", "", "gpu0"]))]
    elif sure == "huge":
        int_options = [option_name(n) for n, f in FIELDS.items() if f.kind is int]
        option = draw(st.sampled_from(int_options))
        argv += [option, draw(st.sampled_from([str(10**400), str(2**64), str(10**20)]))]
    elif sure == "sizes":  # each within its cap, too large together
        argv += ["--batch-size", "4096", "--seq-len", "5000"]
    else:
        argv += [draw(st.sampled_from(["--hiden", "--seed=", "-x", "--json=1"])), "1"]
    return argv


RUN_BAD = [
    ["--workers", "0"],
    ["--workers", "abc"],
    ["--cpus-per-trial", "0"],
    ["--cpus-per-trial", "nan"],
    ["--gpus-per-trial", "-1"],
    ["--gpus-per-trial", "inf"],
    ["--pack-size", "0"],
    ["--pack-size", "-3"],
    ["--storage", "mongodb://localhost/x"],
    ["--storage", "sqlite://"],
    ["--storage", "sqlite:x.db"],
    ["--tracking-uri", "ftp://x/y"],
    ["--study-name", "../x"],
    ["--study-name", ".."],
    ["--study-name", "x" * 500],
    ["--study-name", "[/red]"],
    ["--study-name", "[link=http://evil.example]x[/link]"],
    ["--study-name", "\x1b]0;PWNED\x07"],
    ["--study-name", "ok\x1b[2J"],
    ["--address", "not an address"],
    ["--set", "trial.hidden=0"],
    ["--set", "trial.hidden=" + str(10**400)],
    ["--set", "trial.val_size=100000000"],
    ["--set", "n_trials=" + str(10**400)],
    ["--set", "=1"],
    ["--set", "trial..x=1"],
    ["--set", "trial.hidden={a: 1, a: 2}"],
    ["--set", "trial.lr=[unclosed"],
    ["--dashboard", "-1"],
    ["--dashboard", "99999999"],
    ["--wrokers", "2"],
]
RUN_OTHER = [
    *RUN_BAD,
    ["--workers", str(10**400)],
    ["--yes"],
    ["--pack-size", "2"],
    ["--workers", "1"],
    ["--set", "x"],
]


@st.composite
def run_or_validate_argv(draw: st.DrawFn, tmp: str) -> list[str]:
    """``run`` or ``validate`` of a spec (the smoke spec, or a bad path) with bad options."""
    command = draw(st.sampled_from(["run", "validate"]))
    spec = draw(
        st.sampled_from([str(SMOKE)] * 6 + [f"{tmp}/none.yaml", tmp, "/dev/zero", "/dev/null", ""])
    )
    argv = [command, spec, "--run-dir", f"{tmp}/runs"]
    for option in draw(st.lists(st.sampled_from(RUN_OTHER), max_size=3)):
        argv += option
    if command == "run" or draw(st.booleans()):  # run: never a study started
        argv += draw(st.sampled_from(RUN_BAD))
    if command == "validate":  # validate takes fewer options: the others are refused
        return argv
    return argv


@st.composite
def argument_list(draw: st.DrawFn, tmp: str) -> list[str]:
    if draw(st.integers(0, 2)) == 0:
        return draw(trial_argv())
    return draw(run_or_validate_argv(tmp))


@FUZZ
@given(data=st.data())
def test_bad_option_values_are_refused_in_one_line(
    run_cli: Run, tmp_path: Path, data: st.DataObject
) -> None:
    argv = data.draw(argument_list(str(tmp_path)))
    before = listing(tmp_path)
    code, out, err = run_cli(argv)
    # trial and run lists hold a value that must be refused; validate may accept
    check_outcome(code, out, err, refused=argv[0] != "validate")
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- study names

STUDY_COMMANDS = [
    ["status"],
    ["check"],
    ["sync"],
    ["results"],
    ["query", "_", "SELECT 1"],
    ["report"],
    ["ui"],
    ["delete", "_", "--yes"],
]
"""Every command that takes a STUDY argument (``_`` marks where it goes, else last)."""


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_a_hostile_study_name_is_refused_in_one_clean_line(
    run_cli: Run, tmp_path: Path, data: st.DataObject
) -> None:
    name = data.draw(hostile | st.text(min_size=1, max_size=12).map(lambda t: t + "\x1b[2J"))
    command = data.draw(st.sampled_from(STUDY_COMMANDS))
    argv = [name if a == "_" else a for a in command] + ([] if "_" in command else [name])
    before = listing(tmp_path)
    code, out, err = run_cli([*argv, "--run-dir", str(tmp_path / "runs")])
    check_outcome(code, out, err, refused=True)
    assert "not a study name" in err or name.startswith("-")  # "-x" is an option to Click
    assert listing(tmp_path) == before
