"""What the two front ends share, the ``initstudy`` CLI (:mod:`pipeline.cli`) and the
notebook API (:mod:`pipeline.api`): the checks of what a person gives them, the limits a
study may reach without a confirmation, and the library defaults they run under.

Each check raises a one-line :class:`ValueError` (a :class:`~pipeline.specerrors.SpecError`
for a spec, a :class:`~pipeline.storage.StudyError` for a store that is not there) naming
the option or argument it was given: the CLI prints it and exits 2 (``fail``), the API
raises it. A check of one value takes its label (``--storage``, ``storage``); a check of
several (:func:`read_storage`, :func:`check_run_options`) takes ``label``, which makes a
label from a Python name: :func:`cli_option` (``--cpus-per-trial``) or :func:`api_option`
(``cpus_per_trial``).

Nothing here imports a heavy library (Optuna, PyTorch) or the CLI until a check needs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.urls import default_storage_url, sqlite_file

if TYPE_CHECKING:
    from pipeline.driver import RunOptions
    from pipeline.studyspec import StudySpec

STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")
"""The Optuna storage URL schemes accepted: those whose driver is installed (SQLite's, and
psycopg 3 for PostgreSQL); ``postgres`` is PostgreSQL's alias (:func:`~pipeline.urls.
canonical_url`)."""
TRACKING_SCHEMES = ("sqlite", "postgresql", "postgres", "http", "https", "databricks")
"""The MLflow tracking URI schemes accepted (``postgres``: as for the storage)."""
CONFIRM_TRIALS = 2_000
"""A run asks for a confirmation (``--yes``, ``yes=True``) when a study plans more trials
than this ..."""
CONFIRM_CPU_HOURS = 48.0
"""... or when its estimated training time (StudySpec.estimated_cpu_seconds) is longer than
this many hours on one CPU core: two days."""
MEMORY_FRACTION = 0.8
"""A pack may need at most this share of the memory a task may use (``memory_per_task``,
or else this machine's RAM): the rest is the system's, the driver's and Ray's."""
ADDRESS_RE = re.compile(r"(ray://)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")
"""A Ray cluster address: HOST:PORT or ray://HOST:PORT."""

SpecInput = str | Path | Mapping[str, Any]
"""A spec: a file path, YAML text (a string with a newline, or one starting ``{``) or a
mapping (as ``yaml.safe_load`` returns)."""
Label = Callable[[str], str]
"""Makes the label an error names from a Python name (``run_dir``)."""


def cli_option(name: str) -> str:
    """The CLI's option for a Python name: ``--run-dir`` for ``run_dir``."""
    return "--" + name.replace("_", "-")


def api_option(name: str) -> str:
    """The API's keyword argument for a Python name: the name itself."""
    return name


def one_line(message: str) -> str:
    """A message on one line: lines stripped and joined, SQLAlchemy's help link dropped."""
    lines = (ln.strip() for ln in str(message).splitlines())
    kept = [ln for ln in lines if ln and not ln.startswith("(Background on this error at")]
    return " ".join(kept) or "failed"


def quiet_libraries() -> None:
    """Keep library chatter off the terminal; errors still come through."""
    import logging

    # MLflow's HTTP client retries 7 times with backoff by default, minutes for a dead
    # server; the tracker retries on its own, so fail fast and back-fill later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # No usage telemetry: studies run on closed networks, and we send nothing anywhere
    # (set here too for `ui`'s MLflow server; Ray's is set where Ray starts, in
    # pipeline.execution).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- the stores


def check_url(option: str, url: str | None, schemes: tuple[str, ...]) -> None:
    """A URL must have one of ``schemes``; a SQLite one must name a database file.

    Raises:
        ValueError: it does not (one line, naming ``option``).
    """
    if url is None:
        return
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in schemes:
        raise ValueError(
            f"{option}: {url!r} is not a supported URL; allowed schemes: {', '.join(schemes)}"
        )
    if scheme == "sqlite" and sqlite_file(url) is None:
        raise ValueError(
            f"{option}: {url!r} names no database file; write sqlite:///relative/path.db or"
            " sqlite:////absolute/path.db (an in-memory database would keep nothing)"
        )
    if scheme == "sqlite" and "?" in url:
        query = "?" + url.partition("?")[2]
        raise ValueError(
            f"{option}: {url!r}: SQLite URL options ({query!r}) are not supported: initstudy"
            " opens its SQLite stores itself (read-write, in WAL mode; the commands that"
            " only read write nothing) and would ignore them; drop the part from '?'"
        )


def check_study_name(option: str, name: str) -> None:
    """A study name (it becomes a folder name under the run dir).

    Raises:
        ValueError: ``name`` is not one (one line, naming ``option``).
    """
    from pipeline.studyspec import STUDY_NAME_RULE, is_study_name

    if not is_study_name(name):
        raise ValueError(f"{option}: {name!r} is not a study name; a name is {STUDY_NAME_RULE}")


def check_run_dir(option: str, run_dir: Path) -> None:
    """The run folder must be creatable and writable; checked before anything starts.

    Raises:
        ValueError: it is not (one line, naming ``option``).
    """
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option}: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: {str(probe)!r} is not writable")


def read_storage(run_dir: Path, storage: str | None, label: Label) -> str:
    """The Optuna storage URL of an existing study store; reading never creates one.

    Raises:
        ValueError: ``storage`` is a malformed URL.
        StudyError: no ``optuna.db`` in ``run_dir`` (no ``storage`` given), or no database
            file at a SQLite ``storage``.
    """
    from pipeline.storage import StudyError

    check_url(label("storage"), storage, STORAGE_SCHEMES)
    if storage is None:
        if not (run_dir / "optuna.db").is_file():
            raise StudyError(
                f"no study storage in {str(run_dir)!r} (no optuna.db); give"
                f" {label('run_dir')} or {label('storage')}"
            )
        return default_storage_url(run_dir)
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        raise StudyError(
            f"{label('storage')}: no database file {str(db)!r}; reading a study creates none"
        )
    return storage


# --------------------------------------------------------------------------- a run


MAX_WORKERS = 4096
"""The most CPUs an embedded Ray is given (it is capped at the machine's anyway)."""


def check_run_options(options: RunOptions, label: Label) -> None:
    """The options of a run (``initstudy run``, ``api.run_study``), in the order checked.

    Raises:
        ValueError: the first one that is bad (one line, naming it by ``label``).
    """
    o = options
    check_url(label("storage"), o.storage, STORAGE_SCHEMES)
    check_url(label("tracking_uri"), o.tracking_uri, TRACKING_SCHEMES)
    if o.storage is None or o.tracking_uri is None:
        check_run_dir(label("run_dir"), o.run_dir)
    if o.workers is not None and not 1 <= o.workers <= MAX_WORKERS:
        shown = str(o.workers) if abs(o.workers) < 10**12 else "a number that large"
        raise ValueError(f"{label('workers')}: must be from 1 to {MAX_WORKERS}, got {shown}")
    if not o.cpus_per_trial > 0:
        raise ValueError(f"{label('cpus_per_trial')}: must be > 0, got {o.cpus_per_trial}")
    if not o.gpus_per_trial >= 0:
        raise ValueError(f"{label('gpus_per_trial')}: must be >= 0, got {o.gpus_per_trial}")
    if o.pack_size is not None and o.pack_size < 1:
        raise ValueError(f"{label('pack_size')}: must be >= 1, got {o.pack_size}")
    if o.dashboard_port is not None:
        _check_dashboard(label("dashboard"), o.dashboard_port, o.address)
    if o.study_name is not None:
        check_study_name(label("study_name"), o.study_name)
    if o.address not in (None, "auto", "local") and not ADDRESS_RE.fullmatch(str(o.address)):
        raise ValueError(
            f"{label('address')}: {o.address!r} is not a Ray address; use auto, HOST:PORT or"
            " ray://HOST:PORT"
        )


def _check_dashboard(option: str, port: int, address: str | None) -> None:
    """The embedded Ray's dashboard: an unprivileged port, no cluster, Ray's token auth."""
    if not 1024 <= port <= 65535:
        raise ValueError(f"{option}: a port from 1024 to 65535, got {port}")
    if address is not None:
        raise ValueError(
            f"{option}: only for the embedded Ray; a cluster's dashboard is its head's"
        )
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        from pipeline.execution import DASHBOARD_NEEDS_AUTH

        raise ValueError(f"{option}: {DASHBOARD_NEEDS_AUTH}")


def duration(seconds: float) -> str:
    """A rough duration for people: 40 s, 13 min, 5.2 h, 3.1 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.1f} days"


def size_warning(spec: StudySpec, name: str) -> str | None:
    """Why a study is too large to start without a confirmation (None: it is not); the
    front end adds how to give one."""
    trials = spec.n_trials_planned
    seconds = spec.estimated_cpu_seconds()
    if trials <= CONFIRM_TRIALS and seconds <= CONFIRM_CPU_HOURS * 3600:
        return None
    return (
        f"study {name!r} plans {trials:,} trials, up to about {duration(seconds)} of training"
        f" on one CPU core (more than {CONFIRM_TRIALS:,} trials or"
        f" {CONFIRM_CPU_HOURS:g} CPU-hours)"
    )


# --------------------------------------------------------------------------- a spec


def load_spec(spec: SpecInput, overrides: Sequence[str] = ()) -> tuple[StudySpec, str]:
    """A spec validated, ``--set`` overrides applied, and its task built once (a charlm
    corpus is read here); and the text to store with the study: the file's or the text's
    own, a mapping's as YAML; with overrides the overridden document's.

    Raises:
        SpecError: the spec, an override or the task data is bad (one line).
        TypeError: ``spec`` is none of a :data:`SpecInput`.
    """
    import yaml

    from pipeline.specfile import (
        apply_overrides,
        check_expansion,
        overridden_text,
        read_spec_file,
        read_spec_text,
    )
    from pipeline.studyspec import parse_study_spec

    text: str | None
    data: object
    if isinstance(spec, Mapping):
        source, data, text = "<spec dict>", dict(spec), None
        check_expansion(data, source)
    elif isinstance(spec, str) and ("\n" in spec or spec.lstrip().startswith("{")):
        source, data, text = "<spec text>", read_spec_text(spec, "<spec text>"), spec
    elif isinstance(spec, str | Path):
        source = str(spec)
        data = read_spec_file(spec)
        text = Path(spec).read_text(encoding="utf-8")
    else:
        raise TypeError(f"spec: a path, YAML text or a mapping, got {type(spec).__name__}")
    if overrides:
        data = apply_overrides(data, overrides)
    parsed = parse_study_spec(data, source)
    check_task_data(parsed, source)
    check_memory(parsed, source, one_trial=True)
    if overrides:
        return parsed, overridden_text(data, source, overrides)
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return parsed, text


def check_task_data(spec: StudySpec, source: str) -> None:
    """Build the spec's task at its longest sequence: a charlm corpus file that is missing,
    empty, binary, not UTF-8 or too short is refused now, not in every trial.

    Raises:
        SpecError: the task refuses its data (one line, naming the field).
    """
    from models import get_task
    from pipeline.specerrors import SpecError

    task, corpus = spec.values("task")[0], spec.values("corpus")[0]
    seq_len = max(int(v) for v in spec.values("seq_len"))
    try:
        get_task(task, seq_len, corpus)
    except ValueError as exc:
        if corpus is not None:
            field = "trial.corpus"
        else:
            field = "space.seq_len" if "seq_len" in spec.space else "trial.seq_len"
        raise SpecError(f"{source}: {field}: {exc}") from None


# --------------------------------------------------------------------------- memory


def machine_memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None: the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def gib(n: float) -> str:
    """Bytes as GiB for people: ``48.2 GiB``."""
    return f"{n / 2**30:,.1f} GiB"


def check_memory(
    spec: StudySpec,
    source: str,
    *,
    pack_size: int | None = None,
    memory_per_task: float | None = None,
    gpu: bool = False,
    one_trial: bool = False,
    label: Label = cli_option,
) -> None:
    """Refuse a study whose largest pack would need more memory than a task may use:
    ``MEMORY_FRACTION`` of ``memory_per_task`` GiB, or of this machine's RAM.

    The largest pack is the study's costliest trial (its longest sequence, widest hidden
    layer, largest batch and validation set, most gates, every task) at ``pack_size``
    members, or else at the automatic size (at most 16, within
    :func:`pipeline.plan.pack_limit`, at most the study's trials); with ``one_trial``, one
    trial whatever the options (``load_spec``'s check: no trial may outgrow this machine,
    as ``val_size: 100000000`` would). Its memory is :func:`pipeline.plan.pack_memory_bytes`
    (a charlm corpus's own, at most 8 bytes a character, is not counted). One pack, not
    several running side by side: ``workers`` x this is the front end's to weigh.

    Raises:
        SpecError: it would not fit (one line: what it needs, what is allowed, what to
            lower), or ValueError: ``memory_per_task`` is not a positive number of GiB.
    """
    import math

    from models.spec import TrialSpec
    from pipeline.plan import MAX_AUTO_PACK, pack_limit, pack_memory_bytes
    from pipeline.specerrors import SpecError

    if memory_per_task is not None and not (
        math.isfinite(memory_per_task) and memory_per_task > 0
    ):
        raise ValueError(
            f"{label('memory_per_task')}: a positive number of GiB, got {memory_per_task}"
        )
    total = machine_memory_bytes() if memory_per_task is None else memory_per_task * 2**30
    if total is None:
        return
    allowed = MEMORY_FRACTION * total
    where = "this machine's" if memory_per_task is None else f"{label('memory_per_task')}'s"
    top = {n: max(int(v) for v in spec.values(n)) for n in _MEMORY_FIELDS}
    for task in dict.fromkeys(spec.values("task")):
        dims = _task_dims(str(task), spec.values("corpus")[0], top["seq_len"])
        for cell in dict.fromkeys(spec.values("cell")):
            trial = TrialSpec(
                task=str(task),
                cell=str(cell),
                seq_len=top["seq_len"],
                hidden=top["hidden"],
                batch_size=top["batch_size"],
                val_size=top["val_size"],
            )
            auto = min(MAX_AUTO_PACK, pack_limit(trial, gpu), spec.n_trials_planned)
            members = 1 if one_trial else pack_size or auto
            need = pack_memory_bytes(trial, members, *dims)
            if need <= allowed:
                continue
            smaller = range(members - 1, 1, -1)
            fits = next(
                (m for m in smaller if pack_memory_bytes(trial, m, *dims) <= allowed), None
            )
            shape = ", ".join(f"{n}={v:,}" for n, v in top.items())
            what = (
                f"a pack of {members} {task} {cell} trials"
                if members > 1
                else f"one {task} {cell} trial"
            )
            fix = (
                f"give {label('pack_size')} {fits} or more {label('memory_per_task')}"
                if fits is not None
                else f"lower {' or '.join(_MEMORY_FIELDS)}"
            )
            raise SpecError(
                f"{source}: memory: {what} at {shape}"
                f" needs about {gib(need)}, more than the {gib(allowed)} allowed"
                f" ({MEMORY_FRACTION:.0%} of {where} {gib(total)}); {fix}"
            )


_MEMORY_FIELDS = ("val_size", "batch_size", "seq_len", "hidden")
"""The fields a pack's memory grows with, the usual culprit first."""


def _task_dims(task: str, corpus: str | None, seq_len: int) -> tuple[int | None, int | None]:
    """A task's input and output widths (a charlm corpus's vocabulary); None: the default."""
    if task != "charlm":
        return None, None
    from models import get_task

    built = get_task(task, seq_len, corpus)  # already checked by check_task_data
    return built.input_dim, built.output_dim


# --------------------------------------------------------------------------- the design


def design_check(spec: StudySpec, yes: bool, confirm: str) -> list[str]:
    """Whether the study's design can judge the claims it lists
    (:func:`pipeline.analysis.design.design_problems`), checked before anything trains.

    Args:
        yes: the person confirmed (``--yes``, ``yes=True``): the problems are warnings.
        confirm: how to confirm, for the message (``add --yes``, ``pass yes=True``).

    Returns:
        One line per claim the design cannot judge (warnings, with ``yes``); empty: none.

    Raises:
        SpecError: a claim cannot be judged and ``yes`` is not given (one line: each claim,
            why, what design would).
    """
    from pipeline.analysis.design import design_problems
    from pipeline.specerrors import SpecError

    lines = [p.line for p in design_problems(spec)]
    if lines and not yes:
        raise SpecError(f"{spec.name}: {'; '.join(lines)}; or {confirm} to run it anyway")
    return lines


@dataclass(frozen=True)
class Checked:
    """What :func:`before_run` leaves the front end to show."""

    warnings: list[str]
    """Lines to show as warnings (a design that cannot judge a claim, with ``yes``)."""
    size: str | None
    """The study's size warning (more trials or CPU-hours than a confirmation allows):
    the front end refuses without ``yes`` and notes it with."""


def before_run(
    spec: StudySpec,
    source: str,
    options: RunOptions,
    *,
    yes: bool,
    confirm: str,
    label: Label,
    memory_per_task: float | None = None,
) -> Checked:
    """Every check ``initstudy run`` and :func:`pipeline.api.run_study` make before a
    study starts, in one order: the run options, the memory of the study's largest pack at
    the pack size asked for (:func:`check_memory`), and whether its design can judge the
    claims it lists (:func:`design_check`).

    Raises:
        ValueError: a bad option or memory size; SpecError: the largest pack would not fit,
            or the design cannot judge a claim and ``yes`` is not given.
    """
    check_run_options(options, label)
    check_memory(
        spec,
        source,
        pack_size=options.pack_size,
        memory_per_task=memory_per_task,
        gpu=options.gpus_per_trial > 0,
        label=label,
    )
    lines = design_check(spec, yes, confirm)
    return Checked(lines, size_warning(spec, options.study_name or spec.name))


NO_PILOT = "no earlier results of this study to estimate the noise from"


def pilot_power(
    spec: StudySpec, storage_url: str | None
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """From a pilot (the same study's earlier results): the seeds per cell that tell a 2x
    speedup of Xavier over uniform01 from 10x, as ``{"text", "seeds_needed", "enough"}``
    (``enough`` null without a number to compare), and one such estimate per declared
    ``faster``/``than`` comparison, its own arms and claimed range (``claim``, ``faster``,
    ``than``, ``text``, ``seeds_needed``, ``enough``)."""
    from pipeline.analysis.power import comparison_power
    from pipeline.claimspec import Comparison, parse_claims
    from pipeline.results import load_tables
    from pipeline.storage import StudyError

    nothing: dict[str, object] = {"text": NO_PILOT, "seeds_needed": None, "enough": None}
    claims = parse_claims(spec.claims) if spec.claims else []
    declared = [c for c in claims if isinstance(c, Comparison)]
    seeds = spec.seeds_per_cell()

    def enough(needed: int | None) -> bool | None:
        return None if needed is None else seeds is not None and seeds >= needed

    try:
        trials = None if storage_url is None else load_tables(spec.name, storage_url).trials
    except StudyError:
        trials = None
    if trials is None:
        return nothing, [{"claim": c.id, "faster": c.faster, "than": c.than, **nothing}
                         for c in declared]  # fmt: skip
    c4 = Comparison("C4", "xavier", "uniform01", 2.0, 10.0)  # C4_RANGE
    head, *per_claim = [
        {**e, "enough": enough(e["seeds_needed"])}
        for e in comparison_power(trials, [c4, *declared])
    ]
    return {k: head[k] for k in nothing}, per_claim
