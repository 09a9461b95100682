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
