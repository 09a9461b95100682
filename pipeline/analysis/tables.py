"""A study's results as three typed tables, and read-only SQL over them.

:func:`tables_from_results` flattens TrialResults into

- ``trials``: one row per COMPLETE trial (schema :data:`TRIAL_COLUMNS`);
- ``epochs``: one row per trial and training epoch (schema :data:`EPOCH_COLUMNS`);
- ``steps``: one row per trial and time step of the init diagnostics, measured before
  any training (schema :data:`STEP_COLUMNS`).

Dtypes are fixed by the schemas, also for an empty study: integers are ``int64``,
integers that may be missing are ``Int64`` (missing = ``pd.NA``), flags are ``bool``,
floats are ``float64`` (missing = NaN), and text is pandas' ``string`` dtype (missing =
``pd.NA``). :func:`query` runs DuckDB SQL over the three tables in memory, with file
system access, extensions and configuration changes refused.

Reading a study from its Optuna storage is :func:`pipeline.results.load_tables`; this
module takes results in hand and knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import duckdb
import pandas as pd
import yaml

from models.fields import COLUMNS, SEARCHABLE
from models.spec import TrialResult
from pipeline.claimspec import Claim, parse_claims

__all__ = [
    "EPOCH_COLUMNS",
    "STEP_COLUMNS",
    "TRIAL_COLUMNS",
    "QueryError",
    "StudyTables",
    "device_type",
    "objective_value",
    "query",
    "spec_doc",
    "tables_from_results",
]

TRIAL_COLUMNS: dict[str, str] = {
    "study": "string",
    "trial_number": "int64",
    "key": "string",  # identity key (hash of the TrialSpec and the claim)
    **COLUMNS,
    "outcome": "string",  # converged, censored, stalled, frozen or diverged (TrialResult)
    "converged": "bool",  # outcome == converged
    "converged_epoch": "Int64",  # NA = the outcome is not converged
    "censored": "bool",  # = not converged (the time-to-event view: all else is censored)
    "diverged": "bool",  # diverged at some epoch (also after converging)
    "diverged_epoch": "Int64",  # NA = did not diverge
    "frozen_at_init": "bool",  # the init diagnosis: zero gradient into Wxh and Whh at init
    # (kept when the outcome is diverged: the loss exploded in training all the same)
    "epochs_run": "int64",
    "initial_loss": "float64",  # validation loss before training
    "best_val_loss": "float64",  # best finite validation loss (NaN if none)
    "final_val_loss": "float64",  # validation loss of the last epoch run (NaN if none)
    "baseline_loss": "float64",  # the task's memoryless baseline
    "spectral_radius": "float64",  # of Whh at init
    "hidden_var_first": "float64",  # init diagnostics at step 0 ...
    "hidden_var_last": "float64",  # ... and at the last step
    "hidden_sat_first": "float64",
    "hidden_sat_last": "float64",
    "grad_norm_first": "float64",  # norm of dL/dh at step 0
    "grad_norm_last": "float64",  # norm of dL/dh at the last step
    "input_grad_norm": "float64",  # norm of dL/dWxh at init (NaN: not measured)
    "recurrent_grad_norm": "float64",  # norm of dL/dWhh at init (NaN: not measured)
    "wall_seconds": "float64",
    "pack_wall_seconds": "float64",
    "node": "string",
    "device": "string",  # e.g. "cpu", "cuda:NVIDIA H200"
    "device_type": "string",  # "cpu" or "cuda": the part of device before ":"
    "pack_size": "int64",  # trials trained together in one task (1 = unpacked)
    "value": "float64",  # objective: converged_epoch if converged before diverging, else
    # max_epochs + 1
}
"""The ``trials`` table: column -> pandas dtype.

After ``study``, ``trial_number`` and ``key``, one column per TrialSpec field that has one
(``models.fields.COLUMNS``, in TrialSpec's order), holding the spec's value except:
``init_recurrent`` NA = the same scheme as ``init``; ``recurrent_scale`` is the gain of Whh
alone (= ``scale`` unless set); ``clip`` NaN = no clipping; ``target_loss`` is the target
actually used (the spec's or the task default); ``corpus`` NA = the built-in corpus (or
not a charlm task). Then the result's columns."""

_ID_COLUMNS = [
    "trial_number",
    "key",
    "task",
    "init",
    "init_recurrent",
    "scale",
    "recurrent_scale",
    "lr",
    "clip",
    "optimizer",
    "outcome",
    "cell",
    "seq_len",
    "hidden",
    "seed",
    "device_type",
]
_TRIAL_ID_COLUMNS = _ID_COLUMNS + [n for n in SEARCHABLE if n not in _ID_COLUMNS]
"""Columns from ``trials`` repeated on every ``epochs`` and ``steps`` row: the trial's
identity, its outcome and every searchable TrialSpec field (``models.fields.SEARCHABLE``),
so each row can be grouped by whatever a study searched (``lr``, ``clip``, ...)."""

EPOCH_COLUMNS: dict[str, str] = {
    **{c: TRIAL_COLUMNS[c] for c in _TRIAL_ID_COLUMNS},
    "epoch": "int64",  # 1-based
    "train_loss": "float64",
    "val_loss": "float64",
    "grad_norm": "float64",  # mean over the epoch's batches, before clipping
    "hidden_var": "float64",
    "hidden_sat": "float64",
}
"""The ``epochs`` table: column -> pandas dtype."""

STEP_COLUMNS: dict[str, str] = {
    **{c: TRIAL_COLUMNS[c] for c in _TRIAL_ID_COLUMNS},
    "step": "int64",  # 0-based time step
    "hidden_var": "float64",
    "hidden_sat": "float64",
    "grad_norm": "float64",  # norm of dL/dh_t
}
"""The ``steps`` table: column -> pandas dtype."""


@dataclass
class StudyTables:
    """A study's results, flattened into typed DataFrames."""

    study: str
    """Study name."""
    claim: str
    """The claim the study tests ("" when none)."""
    spec_text: str
    """The study spec (YAML text) the study was created from."""
    trials: pd.DataFrame
    """One row per COMPLETE trial, ordered by trial number (:data:`TRIAL_COLUMNS`)."""
    epochs: pd.DataFrame
    """One row per trial and epoch (:data:`EPOCH_COLUMNS`)."""
    steps: pd.DataFrame
    """One row per trial and init-diagnostics time step (:data:`STEP_COLUMNS`)."""

    @cached_property
    def spec_mapping(self) -> dict[str, Any]:
        """The spec text's YAML mapping, parsed on first access and kept ({} when there is
        no spec text or it is not a mapping)."""
        return spec_doc(self.spec_text)

    @cached_property
    def searched(self) -> list[str]:
        """The parameters the spec searched (``space:`` keys given a list or a range), in
        the order of the ``trials`` columns; [] without a spec. Each is a column of
        ``trials``, ``epochs`` and ``steps``."""
        space = self.spec_mapping.get("space")
        if not isinstance(space, dict):
            return []
        return [c for c in COLUMNS if c in space and isinstance(space[c], list | dict)]

    @cached_property
    def claims(self) -> list[Claim] | None:
        """The spec's ``claims:`` list (``pipeline.claimspec``), None when it has none.

        Parsed from :attr:`spec_text` on first access and kept.
        """
        raw = self.spec_mapping
        if raw.get("claims") is None:
            return None
        return parse_claims(raw["claims"])


def spec_doc(spec_text: str) -> dict[str, Any]:
    """The spec's YAML mapping ({} when there is none or it does not parse as one)."""
    if not spec_text:
        return {}
    try:
        raw = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return {}
    return raw if isinstance(raw, dict) else {}


class QueryError(ValueError):
    """A SQL query was refused or failed; the message is DuckDB's, on one line."""


def tables_from_results(
    study: str,
    rows: list[tuple[int, str, TrialResult]],
    claim: str = "",
    spec_text: str = "",
) -> StudyTables:
    """Build the tables from results in hand (a store's, tests', synthetic data).

    Args:
        study: study name written into the ``study`` column.
        rows: ``(trial_number, key, result)`` per trial; the tables are ordered by
            trial number.
    """
    trial_rows: list[dict[str, Any]] = []
    epoch_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    for number, key, result in sorted(rows, key=lambda r: r[0]):
        row = _trial_row(study, number, key, result)
        trial_rows.append(row)
        ident = {c: row[c] for c in _TRIAL_ID_COLUMNS}
        for rec in result.history:
            epoch_rows.append(
                {
                    **ident,
                    "epoch": rec.epoch,
                    "train_loss": rec.train_loss,
                    "val_loss": rec.val_loss,
                    "grad_norm": rec.grad_norm,
                    "hidden_var": rec.hidden_var,
                    "hidden_sat": rec.hidden_sat,
                }
            )
        diag = result.diagnostics
        for step, (var, sat, norm) in enumerate(
            zip(diag.hidden_var, diag.hidden_sat, diag.grad_norm, strict=True)
        ):
            step_rows.append(
                {**ident, "step": step, "hidden_var": var, "hidden_sat": sat, "grad_norm": norm}
            )
    return StudyTables(
        study=study,
        claim=claim,
        spec_text=spec_text,
        trials=_frame(trial_rows, TRIAL_COLUMNS),
        epochs=_frame(epoch_rows, EPOCH_COLUMNS),
        steps=_frame(step_rows, STEP_COLUMNS),
    )


def device_type(device: str) -> str:
    """The kind of device: ``"cuda:NVIDIA H200"`` -> ``"cuda"``, ``"cpu"`` -> ``"cpu"``."""
    return device.split(":", 1)[0].strip() or "cpu"


def objective_value(result: TrialResult) -> float:
    """Epochs to converge: the converged epoch if reached before any divergence, else
    ``max_epochs + 1`` (the same rule as the study's ``epochs_to_converge`` objective)."""
    epoch = result.converged_at
    return float(result.spec.max_epochs + 1 if epoch is None else epoch)


def _first(values: list[float]) -> float:
    return float(values[0]) if values else math.nan


def _last(values: list[float]) -> float:
    return float(values[-1]) if values else math.nan


def _spec_values(result: TrialResult) -> dict[str, Any]:
    """The TrialSpec columns of a trials row (see :data:`TRIAL_COLUMNS`)."""
    spec = result.spec
    values = {name: getattr(spec, name) for name in COLUMNS}
    rec = spec.recurrent_scale
    values["recurrent_scale"] = spec.scale if rec is None else rec
    values["clip"] = math.nan if spec.clip is None else spec.clip
    values["target_loss"] = result.target_loss
    return values


def _trial_row(study: str, number: int, key: str, result: TrialResult) -> dict[str, Any]:
    diag = result.diagnostics
    return {
        "study": study,
        "trial_number": number,
        "key": key,
        **_spec_values(result),
        "outcome": result.outcome,
        "converged": result.converged,
        "converged_epoch": result.converged_at,
        "censored": not result.converged,
        "diverged": result.diverged,
        "diverged_epoch": result.diverged_epoch,
        "frozen_at_init": result.frozen_at_init,
        "epochs_run": result.epochs_run,
        "initial_loss": diag.initial_loss,
        "best_val_loss": result.best_val_loss,
        "final_val_loss": result.history[-1].val_loss if result.history else math.nan,
        "baseline_loss": result.baseline_loss,
        "spectral_radius": diag.spectral_radius,
        "hidden_var_first": _first(diag.hidden_var),
        "hidden_var_last": _last(diag.hidden_var),
        "hidden_sat_first": _first(diag.hidden_sat),
        "hidden_sat_last": _last(diag.hidden_sat),
        "grad_norm_first": _first(diag.grad_norm),
        "grad_norm_last": _last(diag.grad_norm),
        "input_grad_norm": diag.input_grad_norm,
        "recurrent_grad_norm": diag.recurrent_grad_norm,
        "wall_seconds": result.wall_seconds,
        "pack_wall_seconds": result.pack_wall_seconds,
        "node": result.node,
        "device": result.device,
        "device_type": device_type(result.device),
        "pack_size": int(result.extra.get("pack_size", 1)),
        "value": objective_value(result),
    }


def _frame(rows: Iterable[dict[str, Any]], schema: dict[str, str]) -> pd.DataFrame:
    """A DataFrame with exactly the schema's columns and dtypes (also when empty)."""
    rows = list(rows)
    columns = {
        name: pd.Series([r[name] for r in rows], dtype="object").astype(dtype)
        for name, dtype in schema.items()
    }
    return pd.DataFrame(columns)


QUERY_TIMEOUT = 30.0
"""Seconds a query may run (:func:`query`'s ``timeout``) before it is interrupted."""
QUERY_MEMORY = 2**30
"""Bytes of memory DuckDB may use for a query (1 GiB; ``memory``)."""
QUERY_THREADS = 2
"""Threads DuckDB may use for a query."""
QUERY_ROWS = 1_000_000
"""Rows a query's result may have (``max_rows``); more is refused, not converted."""


def query(
    tables: StudyTables,
    sql: str,
    *,
    timeout: float | None = None,
    memory: int | None = None,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Run DuckDB SQL over the tables ``trials``, ``epochs`` and ``steps``, read-only.

    The connection is in memory and holds nothing but the three tables (as views over
    the DataFrames). File system access (``COPY ... TO``, ``read_csv``, ``ATTACH``,
    ``EXPORT``), extension install/load, spilling to disk, lookups of other Python
    variables, and any later configuration change are refused. ``CREATE``/``DROP``
    only touch this throwaway connection, never the storage or the DataFrames.

    A query is bounded: ``memory`` bytes, :data:`QUERY_THREADS` threads, ``timeout``
    seconds (a timer thread interrupts the connection) and ``max_rows`` result rows (None:
    :data:`QUERY_MEMORY`, :data:`QUERY_TIMEOUT`, :data:`QUERY_ROWS`), so no SQL (an
    endless recursive CTE, a billion-row list) can hang or exhaust the machine.

    Raises:
        QueryError: DuckDB refused or failed the query, or it reached a limit (one line).
    """
    import contextlib
    import threading

    timeout = QUERY_TIMEOUT if timeout is None else timeout
    memory = QUERY_MEMORY if memory is None else memory
    max_rows = QUERY_ROWS if max_rows is None else max_rows
    if not sql.strip():
        raise QueryError("the SQL is empty; give a query over trials, epochs and steps")
    con = duckdb.connect(":memory:")
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        with contextlib.suppress(duckdb.Error):  # closed as it fired: the query had ended
            con.interrupt()

    timer = threading.Timer(timeout, stop)
    try:
        con.register("trials", tables.trials)
        con.register("epochs", tables.epochs)
        con.register("steps", tables.steps)
        for setting in (
            "SET python_enable_replacements = false",
            "SET temp_directory = ''",
            f"SET memory_limit = '{int(memory)}B'",
            f"SET threads = {QUERY_THREADS}",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(setting)
        timer.start()
        try:
            return _fetch(con.execute(sql), max_rows)
        except duckdb.Error as exc:
            if stopped.is_set():
                raise QueryError(
                    f"stopped after {timeout:g} s, the time a query may run; narrow it"
                    " (WHERE, LIMIT, a bounded recursion)"
                ) from None
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise QueryError(
                    f"it needs more than the {memory / 2**30:g} GiB of memory a query may"
                    f" use; narrow it (WHERE, LIMIT) ({str(exc).strip().splitlines()[0]})"
                ) from None
            raise QueryError(_one_line(str(exc))) from None
    finally:
        timer.cancel()
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, max_rows: int) -> pd.DataFrame:
    """The result as a DataFrame, converted in chunks; refused past ``max_rows`` rows."""
    chunks: list[pd.DataFrame] = []
    rows = 0
    while True:
        chunk = con.fetch_df_chunk(64)
        if not len(chunk):
            break
        rows += len(chunk)
        if rows > max_rows:
            raise QueryError(
                f"the result has more than {max_rows:,} rows, the most a query may return;"
                " aggregate it or add a LIMIT"
            )
        chunks.append(chunk)
    if not chunks:
        return chunk
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def _one_line(message: str) -> str:
    """DuckDB's message on one line, without the caret line that points into the SQL."""
    lines = [ln.strip() for ln in message.splitlines()]
    kept = [ln for ln in lines if ln and set(ln) != {"^"}]
    return "; ".join(kept) or "query failed"
