"""What every benchmark script shares: the machine block, the JSON file, the markdown table.

Each script in ``benchmarks/`` writes ``benchmarks/results/<name>.json`` with the keys
``benchmark``, ``machine``, ``settings``, ``results``, ``targets`` and ``markdown``, and
prints the same markdown to stdout. Versions are read from the installed distributions,
so building the machine block imports none of the heavy libraries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (benchmarks run from any working directory)."""
RESULTS = ROOT / "benchmarks" / "results"
"""Where each benchmark writes ``<name>.json`` unless ``--out`` says otherwise."""
PACKAGES = ("torch", "ray", "optuna", "mlflow")
"""Libraries whose versions every result states."""
RESULT_KEYS = ("benchmark", "machine", "settings", "results", "targets", "markdown")
"""Top-level keys of every result file."""
MACHINE_KEYS = (
    "platform",
    "python",
    "cpu_model",
    "cores",
    "memory_gib",
    "versions",
    "git_commit",
    "date",
    "load_avg_1m",
)
"""Keys of the ``machine`` block."""

if str(ROOT) not in sys.path:  # models/ and pipeline/ importable without an install
    sys.path.append(str(ROOT))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Total memory from /proc/meminfo, in GiB (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when tracked files have changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def machine() -> dict[str, Any]:
    """Where and with what a benchmark ran: the ``machine`` block of every result."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "memory_gib": memory_gib(),
        "versions": versions,
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_1m": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average when the benchmark started (other work on the machine)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_line(m: dict[str, Any]) -> str:
    """One markdown line describing the machine, for under a table."""
    v = m["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in PACKAGES)
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (
        f"_Machine: {m['cpu_model']}, {m['cores']} cores{mem}; {m['platform']}; "
        f"Python {m['python']}; {libs}; commit {m['git_commit']}; {m['date']}; "
        f"load average at start {m.get('load_avg_1m')}._"
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats are formatted by the caller."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target(name: str, rule: str, value: float | None, passed: bool | None) -> dict[str, Any]:
    """One checked target; ``passed`` None means it could not be checked in this run."""
    return {"name": name, "rule": rule, "value": value, "passed": passed}


def verdict(t: dict[str, Any]) -> str:
    """PASS, FAIL or SKIPPED."""
    return "SKIPPED" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")


def target_lines(targets: list[dict[str, Any]]) -> str:
    """Markdown bullet lines, one per target, each starting with PASS/FAIL/SKIPPED."""
    out = []
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        out.append(f"- **{verdict(t)}** {t['name']}: {t['rule']} (measured {value})")
    return "\n".join(out)


def finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def write_result(
    name: str,
    out: Path | None,
    machine_block: dict[str, Any],
    settings: dict[str, Any],
    results: Any,
    targets: list[dict[str, Any]],
    markdown: str,
    variant: str = "",
) -> Path:
    """Write the result file; return its path.

    The file is ``out`` if given, else ``benchmarks/results/<name>.json``, or
    ``<name>_<variant>.json`` for a variant run (``--quick``, another spec), so a quick
    run never overwrites the full one.
    """
    stem = f"{name}_{variant}" if variant else name
    path = out or RESULTS / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "machine": machine_block,
        "settings": settings,
        "results": results,
        "targets": targets,
        "markdown": markdown,
    }
    path.write_text(json.dumps(finite(doc), indent=1, allow_nan=False) + "\n")
    return path


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--check``, shared by every script."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result file (default: benchmarks/results/<name>.json, <name>_quick.json with "
        "--quick)",
    )
    parser.add_argument("--check", action="store_true", help="exit with code 1 if a target FAILs")


def finish(targets: list[dict[str, Any]], check: bool) -> int:
    """The exit code: 1 only with ``--check`` and a FAILed target."""
    failed = [t for t in targets if t["passed"] is False]
    return 1 if check and failed else 0


def child_env(threads: int | None = None) -> dict[str, str]:
    """Environment for a child process: the repo importable, optional thread caps."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def python() -> str:
    """The interpreter running this benchmark (the project's virtualenv, normally)."""
    return sys.executable


class LocalServers:
    """PostgreSQL and an MLflow tracking server as local processes on loopback (free
    ports), for a benchmark of the cluster path; :meth:`stop` removes everything.

    PostgreSQL is the machine's (``/usr/lib/postgresql/*/bin``), a throwaway cluster in a
    temp folder (as ``postgres`` when run as root: initdb refuses root), with two
    databases: ``optuna`` (the study storage) and ``mlflow`` (the tracking server's
    backend store). The MLflow server is ``deploy/mlflow-server.sh``, the script
    docker-compose.yml runs, started in its own session and stopped by its process group.
    Use as a context manager: everything is stopped also on an error or Ctrl-C.
    """

    user = "initstudy"

    def __init__(self, mlflow_workers: int = 1) -> None:
        import secrets
        import tempfile

        found = sorted(Path("/").glob("usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
        self.bin = max(found, key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
        self.bin = self.bin.parent
        self.root = Path(tempfile.mkdtemp(prefix="isb-", dir="/tmp"))
        self.data = self.root / "data"
        self.pg_port, self.mlflow_port = free_port(), free_port()
        self.password = secrets.token_hex(12)
        self._owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.mlflow_workers = mlflow_workers
        self._mlflow: subprocess.Popen[bytes] | None = None
        self.mlflow_log = self.root / "mlflow.log"

    def __enter__(self) -> LocalServers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database (password included)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._owner, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        import shutil
        import time
        import urllib.request

        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._owner:
            for path in (self.root, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._pg(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={self.user}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        # Durability off, as in the cluster tests: the benchmark measures the pipeline.
        options = (
            f"-p {self.pg_port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "postgres.log")
        self._pg(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options
        )
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for db in ("optuna", "mlflow"):
                conn.execute(f'CREATE DATABASE "{db}"')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            POSTGRES_USER=self.user,
            POSTGRES_PASSWORD=self.password,
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_PORT=str(self.pg_port),
            MLFLOW_DB="mlflow",
            MLFLOW_HOST="127.0.0.1",
            MLFLOW_PORT=str(self.mlflow_port),
            MLFLOW_WORKERS=str(self.mlflow_workers),
            MLFLOW_ARTIFACTS_DESTINATION=str(self.root / "mlartifacts"),
        )
        with self.mlflow_log.open("wb") as out:
            self._mlflow = subprocess.Popen(
                [str(ROOT / "deploy" / "mlflow-server.sh")],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while True:
            if self._mlflow.poll() is not None:
                tail = self.mlflow_log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the MLflow server exited:\n{tail}")
            try:
                with urllib.request.urlopen(self.tracking_uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the MLflow server did not answer /health within 180 s")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the MLflow server (its process group) and PostgreSQL; remove the folder.
        Idempotent."""
        import contextlib
        import shutil
        import signal

        proc, self._mlflow = self._mlflow, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):  # what is left of its group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What still runs or listens after :meth:`stop` (empty: all gone)."""
        import socket

        found = []
        for name, port in (("postgres", self.pg_port), ("mlflow", self.mlflow_port)):
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    found.append(f"{name} on port {port}")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.root).encode() in cmd:
                    found.append(f"pid {entry.name}")
        return found


def free_port() -> int:
    """A loopback TCP port nothing listens on now, below the kernel's ephemeral range and
    above Ray's worker ports (so no socket bound to port 0 takes it first)."""
    import random
    import socket

    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(500):
        port = random.randint(20000, ephemeral - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def quick_spec(
    base: Path, folder: Path, name: str, trial: dict[str, Any], space: dict[str, Any]
) -> Path:
    """A tiny copy of the study spec ``base`` for a benchmark's ``--quick`` run, written into
    ``folder`` as ``<name>.yaml``: ``trial`` overrides its trial fields, ``space`` replaces
    its grid, and its claims are dropped (so few trials decide none)."""
    import yaml

    doc = yaml.safe_load(base.read_text())
    script = f"benchmarks/{name.removesuffix('_quick')}.py --quick"
    doc["name"] = name
    doc["description"] = f"{script}: {base.stem} with a tiny budget"
    doc["trial"] = {**doc.get("trial", {}), **trial}
    doc["space"] = dict(space)
    doc.pop("claims", None)
    path = folder / f"{name}.yaml"
    header = f"# Run: python {script} (written by that command)\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path


def initstudy_run(spec_path: Path, run_dir: Path, *extra: str) -> list[str]:
    """``initstudy run SPEC --run-dir DIR [EXTRA...]``: the installed script, else the
    module."""
    script = Path(sys.executable).parent / "initstudy"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]
    return [*head, "run", str(spec_path), "--run-dir", str(run_dir), *extra]


def timed_run(command: list[str], log: Path) -> float:
    """Run ``command`` with :func:`child_env`, its output into ``log``; its wall time.

    Raises:
        RuntimeError: it exited non-zero (with the log's last lines).
    """
    import time

    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=child_env(), check=False
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}; see {log}:\n{tail}")
    return wall
