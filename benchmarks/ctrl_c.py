"""Ctrl-C: how soon ``initstudy run`` answers a SIGINT in each phase of its start.

Run: python benchmarks/ctrl_c.py                 (SIGINT at 0.5 s, 1 s, ... 9 s)
     python benchmarks/ctrl_c.py --quick         (at 1 s and 4 s; the tests)

Each point starts ``initstudy run studies/smoke.yaml --run-dir TMP`` in a fresh folder (so
the stores are created, MLflow's migrations run and the embedded Ray starts, as on a
first run) and sends it one SIGINT after the delay. It records what the process was doing
then (``ray``: whether its Ray's GCS was up), when its first line after the signal came
(``answer_s``: the Ctrl-C note, or the summary; its exit when it said nothing, as before
its stores are opened), when it exited (``exit_s``), its exit
code, whether any trial was training (the note counts running or submitted trials: those
are let finish, by design) and how many processes still held its Ray session's folder a
second later.

Targets: every answer within 1 s; where nothing was training, the exit within 2 s; no
process left behind.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "ctrl_c"
SPEC = bc.ROOT / "studies" / "smoke.yaml"
ANSWER_S = 1.0
EXIT_S = 2.0
IDLE_NOTE = re.compile(r"finishing 0 running trials \(0 packs\);")


def _children(pid: int, name: str) -> list[str]:
    found = subprocess.run(["pgrep", "-P", str(pid), name], capture_output=True, text=True)
    return found.stdout.split()


def _take_sigint() -> None:
    """In the child: SIGINT's default action, as at a terminal. A shell's background job
    (``cmd &`` in a script, CI) starts with SIGINT ignored, and an ignored signal stays
    ignored across exec: Python would never see it before the run installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_point(delay: float) -> dict[str, Any]:
    """One run, one SIGINT after ``delay`` seconds; what it did."""
    with tempfile.TemporaryDirectory(prefix="ctrl-c-") as tmp:
        command = [*bc.initstudy_run(SPEC, Path(tmp))]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=bc.child_env(), bufsize=1, preexec_fn=_take_sigint,
        )  # fmt: skip
        lines: list[tuple[float, str]] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    lines.append((time.monotonic(), line.rstrip()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(delay)
        gcs = _children(proc.pid, "gcs_server")
        folder = None
        if gcs:
            cmdline = Path(f"/proc/{gcs[0]}/cmdline").read_bytes().decode(errors="replace")
            found = re.search(r"(/[^\0]*initstudy-ray-[^/]+)/", cmdline)
            folder = found.group(1) if found else None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        ended = time.monotonic()
        reader.join(5)
        time.sleep(1.0)
        left = 0
        if folder:
            held = subprocess.run(["pgrep", "-f", folder], capture_output=True, text=True)
            left = len(held.stdout.split())
        after = [(t - sent, text) for t, text in lines if t >= sent]
        note = next((text for _, text in after if "Ctrl-C:" in text), "")
        return {
            "delay_s": delay,
            "ray": "up" if gcs else "not started",
            "answer_s": round(after[0][0] if after else ended - sent, 3),
            "exit_s": round(ended - sent, 3),
            "returncode": proc.returncode,
            "training": bool(note) and not IDLE_NOTE.search(note),
            "left_processes": left,
            "first_line": after[0][1][:160] if after else "",
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two points (the tests)")
    bc.add_common_args(parser)
    args = parser.parse_args(argv)
    m = bc.machine()
    delays = [1.0, 4.0] if args.quick else [x / 2 for x in range(1, 19)]
    points = []
    for delay in delays:
        point = one_point(delay)
        points.append(point)
        print(
            f"SIGINT at {delay:4.1f} s (Ray {point['ray']}): answer {point['answer_s']} s, "
            f"exit {point['exit_s']} s, rc {point['returncode']}, "
            f"{'training' if point['training'] else 'idle'}",
            flush=True,
        )
    answers = [p["answer_s"] for p in points]
    idle_exits = [p["exit_s"] for p in points if not p["training"]]
    worst_answer = max(answers, default=None)
    worst_exit = max(idle_exits, default=None)
    targets = [
        bc.target(
            "answer", f"first line within {ANSWER_S:g} s of every SIGINT", worst_answer,
            worst_answer is not None and worst_answer <= ANSWER_S,
        ),
        bc.target(
            "exit", f"exit within {EXIT_S:g} s where nothing was training", worst_exit,
            None if worst_exit is None else worst_exit <= EXIT_S,
        ),
        bc.target(
            "left", "no process left holding the session folder",
            float(sum(p["left_processes"] for p in points)),
            all(p["left_processes"] == 0 for p in points),
        ),
    ]  # fmt: skip
    rows = [
        [p["delay_s"], p["ray"], p["answer_s"], p["exit_s"], p["returncode"],
         "yes" if p["training"] else "no", p["left_processes"]]
        for p in points
    ]  # fmt: skip
    markdown = "\n\n".join(
        [
            f"### Ctrl-C during the start of `{SPEC.name}` (a fresh run folder)",
            bc.table(
                ["SIGINT at (s)", "Ray", "answer (s)", "exit (s)", "rc", "training", "left"],
                rows,
            ),
            bc.machine_line(m),
            bc.target_lines(targets),
        ]
    )
    print(markdown)
    settings = {"spec": str(SPEC.relative_to(bc.ROOT)), "delays_s": delays}
    path = bc.write_result(
        NAME, args.out, m, settings, {"points": points}, targets, markdown,
        "quick" if args.quick else "",
    )  # fmt: skip
    print(f"wrote {path}")
    return bc.finish(targets, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
