"""Packed vs one-by-one training: model-steps per second and peak memory.

Run: python benchmarks/packing.py            (full grid, ~10 minutes on 2 cores)
     python benchmarks/packing.py --quick    (a tiny grid, seconds; used by the tests)
     python benchmarks/packing.py --cell lstm --ks 1 4 16 --hiddens 64 256
                                             (another cell; results in packing_lstm.json)

A model-step is one member's forward, backward and optimizer update on one batch. For
each K (pack size), hidden size and sequence length, K trials of one shape (different
seeds and init schemes) are trained

- packed: one packed model of all K specs (``models.train._train``, drained, the body of
  ``train_pack``);
- one by one: a plain one-member model per spec in turn, in the same process
  (``models.train._train([spec])``). ``train_trial`` itself trains a lone trial beside a copy
  of itself so its numbers match packed training bit for bit; that doubles the cost of
  trials run alone, and is not charged to the one-by-one baseline here;

with one torch thread (``torch.set_num_threads(1)``), a fixed number of batches
(``target_loss`` tiny, so no member stops early) and the whole call timed (setup, init
diagnostics and validation included, as in a real study). Each (config, mode) runs in a
fresh subprocess after a warm-up call of the same shape, so the peak RSS reported is that
of one clean worker process (``ru_maxrss`` at its end) and no run inherits another's
memory. Target: packed >= 3x one-by-one at K=16, hidden 64 (both sequence lengths).

The distance to the limit: each row also gives the achieved matmul rate, GFLOP/s, packed
and one by one, beside the core's peak, measured in a fresh subprocess (before the grid
and after it, the better kept) as the best of ``PEAK_REPEATS`` float32 ``torch.mm``
products of two ``PEAK_N`` x ``PEAK_N`` matrices at one torch thread (2 n^3 flops each;
1024 x 1024, best of 3, with ``--quick``). Rates and peak are given in wall time and in
process CPU time (the second less sensitive to other load on the machine, which takes
wall time but not CPU time). The flops of one model-step (one member, one batch of B
sequences of T steps, hidden H, G gate blocks: 1 Elman, 4 LSTM, 3 GRU; input and output
widths I and O of the task, the output layer on the last L steps the loss reads, 1 for
the adding task) are counted analytically (:func:`step_flops`), 2 m n k per (m, k) x
(k, n) product:

- forward: the input projection x Wxh, 2 T B I GH; the recurrence h_{t-1} Whh for the
  T - 1 steps after the first (h_{-1} is zero, and no product is computed for it),
  2 (T-1) B H GH; the output projection h Why, 2 L B H O;
- backward: the recurrence twice (dL/dh_{t-1} and dL/dWhh), the output projection twice
  (dL/dh and dL/dWhy), the input projection once (dL/dWxh only: the inputs need no
  gradient). So backward = 2x forward, less one input projection.

Not counted: the elementwise work (activations, gates, the loss, gradient norms and
clipping, Adam's update), the bias gradients (the fused LSTM and GRU backward get them
by a column of ones in the dWxh product), and the work outside the training steps that
the timed call includes (setup, init diagnostics, one validation forward pass per epoch
and one before training). The rate is therefore the counted flops of all model-steps
over the whole timed call: a lower bound on the matmul rate during the steps themselves.
``tests/test_benchmarks.py`` checks the count against ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "packing"
FULL_GRID = {"k": [1, 4, 16, 64], "hidden": [32, 64, 256], "seq_len": [10, 50]}
QUICK_GRID = {"k": [1, 4], "hidden": [16], "seq_len": [5]}
INITS = ("xavier", "orthogonal", "glorot_uniform", "glorot_normal", "torch_default")
"""Init schemes given to members in turn (all stable at lr 1e-3 with clipping)."""
TARGET_SPEEDUP = 3.0
TARGET_K, TARGET_HIDDEN = 16, 64
GATED_TARGET_SPEEDUP = {10: 3.0, 50: 2.5}
"""LSTM and GRU (four and three gate blocks of matmuls per step): the target by seq_len."""


def target_speedup(cell: str, seq_len: int) -> float:
    """The packed/one-by-one speedup a cell should reach at K=16, hidden 64."""
    if cell in ("lstm", "gru"):
        return GATED_TARGET_SPEEDUP.get(seq_len, TARGET_SPEEDUP)
    return TARGET_SPEEDUP


BATCH_SIZE = 32
VAL_SIZE = 32
MIN_SECONDS = 1.0
MAX_REPEATS = 5
PEAK_N = 2048
"""Size of the square float32 matrices whose torch.mm measures the core's peak."""
PEAK_REPEATS = 5
"""Timed products for the peak (after one warm-up); the fastest is kept."""
QUICK_PEAK_N, QUICK_PEAK_REPEATS = 1024, 3
"""The peak's product with ``--quick`` (an eighth of the arithmetic, for the tests)."""


def step_flops(cell: str, hidden: int, seq_len: int, batch: int = BATCH_SIZE) -> dict[str, int]:
    """Matmul flops of one model-step (one member, one batch), forward and backward.

    The count of the module docstring: 2 m n k per product; the input projection, the
    recurrence (T - 1 steps) and the output projection (the last ``loss_steps`` steps) in
    the forward; in the backward, dL/dh and dL/dW for the recurrence and the output
    projection, dL/dWxh alone for the input projection. Elementwise work is not counted.
    """
    from models.cells import get_cell
    from models.tasks import get_task

    task = get_task("adding", seq_len, None)
    gh = get_cell(cell).gates * hidden
    readout = task.loss_steps or seq_len
    inputs = 2 * seq_len * batch * task.input_dim * gh
    recurrent = 2 * (seq_len - 1) * batch * hidden * gh
    output = 2 * readout * batch * hidden * task.output_dim
    forward = inputs + recurrent + output
    backward = inputs + 2 * recurrent + 2 * output
    return {
        "input_projection": inputs,
        "recurrent": recurrent,
        "output_projection": output,
        "forward": forward,
        "backward": backward,
        "total": forward + backward,
    }


def peak_gflops(n: int = PEAK_N, repeats: int = PEAK_REPEATS) -> dict[str, Any]:
    """The core's float32 matmul rate at one torch thread: best of ``repeats`` n x n mm,
    in wall time and in process CPU time (the latter less sensitive to other load)."""
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    return {
        "gflops": 2 * n**3 / best / 1e9,
        "gflops_cpu_time": 2 * n**3 / best_cpu / 1e9,
        "seconds": best,
        "cpu_seconds": best_cpu,
        "n": n,
        "repeats": repeats,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
    }


def make_specs(
    k: int, hidden: int, seq_len: int, batches: int, epochs: int, cell: str = "rnn_tanh"
) -> list[Any]:
    """K adding-task specs of one shape, different seeds and init schemes, no early stop."""
    from models.spec import TrialSpec

    return [
        TrialSpec(
            task="adding",
            cell=cell,
            seq_len=seq_len,
            hidden=hidden,
            init=INITS[i % len(INITS)],
            seed=i,
            data_seed=0,
            optimizer="adam",
            lr=1e-3,
            clip=1.0,
            batch_size=BATCH_SIZE,
            batches_per_epoch=batches,
            max_epochs=epochs,
            target_loss=1e-12,
            val_size=VAL_SIZE,
        )
        for i in range(k)
    ]


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Inside the subprocess: warm up, then time one mode ``repeats`` times (best kept)."""
    import torch

    from models.train import _train, drain

    if payload["mode"] == "peak":
        return peak_gflops(payload["n"], payload["repeats"])
    torch.set_num_threads(1)
    k, hidden, seq_len = payload["k"], payload["hidden"], payload["seq_len"]
    batches, epochs = payload["batches_per_epoch"], payload["max_epochs"]
    cell = payload.get("cell", "rnn_tanh")
    specs = make_specs(k, hidden, seq_len, batches, epochs, cell)
    drain(_train(make_specs(1, hidden, seq_len, 1, 1, cell)))  # warm-up: first-call costs
    rss_warm = peak_rss_mib()
    best, best_cpu, spent, runs = float("inf"), float("inf"), 0.0, 0
    results: list[Any] = []
    # At least `repeats` runs; short configs are repeated up to MAX_REPEATS times, until
    # MIN_SECONDS are spent, so a few-millisecond run is not one noisy sample.
    while runs < payload["repeats"] or (spent < MIN_SECONDS and runs < MAX_REPEATS):
        started, cpu_started = time.perf_counter(), time.process_time()
        packed = payload["mode"] == "packed"
        results = drain(_train(specs)) if packed else [drain(_train([s]))[0] for s in specs]
        elapsed = time.perf_counter() - started
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    steps = sum(len(r.history) for r in results) * batches
    return {
        "seconds": best,
        "cpu_seconds": best_cpu,
        "model_steps": steps,
        "steps_per_s": steps / best,
        "diverged": sum(r.diverged for r in results),
        "final_val_loss": [r.history[-1].val_loss if r.history else None for r in results],
        "peak_rss_mib": peak_rss_mib(),
        "warm_rss_mib": rss_warm,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
    }


def run_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one (config, mode) in a fresh interpreter and return what it measured."""
    proc = subprocess.run(
        [bc.python(), str(Path(__file__).resolve()), "--worker", json.dumps(payload)],
        capture_output=True,
        text=True,
        env=bc.child_env(threads=1),
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {payload} failed:\n{proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def max_rel_diff(a: list[float | None], b: list[float | None]) -> float | None:
    """Largest relative difference between two members' final validation losses."""
    diffs = [
        abs(x - y) / max(abs(x), abs(y), 1e-12)
        for x, y in zip(a, b, strict=True)
        if x is not None and y is not None
    ]
    return max(diffs) if diffs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid (for the tests)")
    parser.add_argument("--ks", type=int, nargs="+", help="pack sizes (default 1 4 16 64)")
    parser.add_argument("--hiddens", type=int, nargs="+", help="hidden sizes (32 64 256)")
    parser.add_argument("--seq-lens", type=int, nargs="+", help="sequence lengths (10 50)")
    parser.add_argument("--batches-per-epoch", type=int, default=None, help="default 10")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs, best kept")
    parser.add_argument(
        "--cell", default="rnn_tanh", help="cell type: rnn_tanh (default), rnn_relu, lstm, gru"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    bc.add_common_args(parser)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from models.cells import CELLS

    if args.cell not in CELLS:
        parser.error(f"--cell: unknown cell {args.cell!r}; known: {', '.join(sorted(CELLS))}")

    grid = QUICK_GRID if args.quick else FULL_GRID
    ks = args.ks or grid["k"]
    hiddens = args.hiddens or grid["hidden"]
    seq_lens = args.seq_lens or grid["seq_len"]
    batches = args.batches_per_epoch or (2 if args.quick else 10)
    epochs = args.epochs or (1 if args.quick else 2)
    settings = {
        "task": "adding",
        "cell": args.cell,
        "optimizer": "adam",
        "batch_size": BATCH_SIZE,
        "val_size": VAL_SIZE,
        "batches_per_epoch": batches,
        "max_epochs": epochs,
        "model_steps_per_member": batches * epochs,
        "torch_threads": 1,
        "repeats": args.repeats,
        "inits": list(INITS),
        "ks": ks,
        "hiddens": hiddens,
        "seq_lens": seq_lens,
        "timing": "wall time of the packed model's training / of all K one-member models, "
        f"after a warm-up call; best of >= `repeats` runs (runs shorter than {MIN_SECONDS:g} s "
        f"in total are repeated, up to {MAX_REPEATS} runs)",
        "peak_rss": "ru_maxrss of a fresh subprocess per (config, mode), at its end "
        "(interpreter + torch + warm-up + the timed run)",
        "quick": args.quick,
        "flops_counted": "matmuls of one model-step, 2 m n k each: forward x Wxh (all T "
        "steps), h Whh (T - 1 steps), h Why (the steps the loss reads); backward the same "
        "recurrent and output products twice (dL/dh, dL/dW), the input projection once "
        "(dL/dWxh); elementwise ops, bias gradients, setup and validation not counted",
        "gflops": "counted flops of all model-steps / the whole timed call (setup, init "
        "diagnostics and validation included): a lower bound on the steps' own rate",
    }
    m = bc.machine()
    # The core's peak, in a fresh process at one thread: before the grid and after it (the
    # better of the two is the peak; both are kept, as other load moves them).
    peak_n, peak_repeats = (
        (QUICK_PEAK_N, QUICK_PEAK_REPEATS) if args.quick else (PEAK_N, PEAK_REPEATS)
    )
    peak_payload = {"mode": "peak", "n": peak_n, "repeats": peak_repeats}
    peak_before = run_worker(peak_payload)
    rows: list[dict[str, Any]] = []
    for hidden in hiddens:
        for seq_len in seq_lens:
            for k in ks:
                base = {
                    "k": k,
                    "hidden": hidden,
                    "seq_len": seq_len,
                    "batches_per_epoch": batches,
                    "max_epochs": epochs,
                    "repeats": args.repeats,
                    "cell": args.cell,
                }
                packed = run_worker({**base, "mode": "packed"})
                alone = run_worker({**base, "mode": "one_by_one"})
                flops = step_flops(args.cell, hidden, seq_len)
                row = {
                    "k": k,
                    "hidden": hidden,
                    "seq_len": seq_len,
                    "model_steps": packed["model_steps"],
                    "packed_seconds": packed["seconds"],
                    "one_by_one_seconds": alone["seconds"],
                    "packed_steps_per_s": packed["steps_per_s"],
                    "one_by_one_steps_per_s": alone["steps_per_s"],
                    "speedup": packed["steps_per_s"] / alone["steps_per_s"],
                    "packed_cpu_seconds": packed["cpu_seconds"],
                    "one_by_one_cpu_seconds": alone["cpu_seconds"],
                    "speedup_cpu_time": alone["cpu_seconds"] / packed["cpu_seconds"],
                    "packed_peak_rss_mib": packed["peak_rss_mib"],
                    "one_by_one_peak_rss_mib": alone["peak_rss_mib"],
                    "warm_rss_mib": packed["warm_rss_mib"],
                    "runs": [packed["runs"], alone["runs"]],
                    "diverged": packed["diverged"],
                    "max_rel_diff_final_val_loss": max_rel_diff(
                        packed["final_val_loss"], alone["final_val_loss"]
                    ),
                    "flops_per_model_step": flops["total"],
                    "flops_per_model_step_forward": flops["forward"],
                    "flops_per_model_step_backward": flops["backward"],
                    "packed_gflops": flops["total"] * packed["steps_per_s"] / 1e9,
                    "one_by_one_gflops": flops["total"] * alone["steps_per_s"] / 1e9,
                    "packed_gflops_cpu_time": flops["total"]
                    * packed["model_steps"]
                    / packed["cpu_seconds"]
                    / 1e9,
                    "one_by_one_gflops_cpu_time": flops["total"]
                    * alone["model_steps"]
                    / alone["cpu_seconds"]
                    / 1e9,
                }
                rows.append(row)
                print(
                    f"K={k:3d} H={hidden:4d} T={seq_len:3d}: packed "
                    f"{row['packed_steps_per_s']:9.1f} steps/s, one by one "
                    f"{row['one_by_one_steps_per_s']:9.1f} steps/s, x{row['speedup']:.2f}, "
                    f"packed {row['packed_gflops']:.2f} GFLOP/s",
                    file=sys.stderr,
                    flush=True,
                )

    peak_after = run_worker(peak_payload)
    peak = max(peak_before["gflops"], peak_after["gflops"])
    peak_cpu = max(peak_before["gflops_cpu_time"], peak_after["gflops_cpu_time"])
    settings["peak"] = {
        "gflops": peak,
        "gflops_cpu_time": peak_cpu,
        "gflops_before_grid": peak_before["gflops"],
        "gflops_after_grid": peak_after["gflops"],
        "gflops_cpu_time_before_grid": peak_before["gflops_cpu_time"],
        "gflops_cpu_time_after_grid": peak_after["gflops_cpu_time"],
        "matmul": f"torch.mm of two {peak_n}x{peak_n} float32 matrices, one torch thread, "
        f"best of {peak_repeats} after a warm-up, in a fresh subprocess before and after "
        "the grid; the better of the two, in wall time and in process CPU time",
    }
    settings["load_avg_1m_end"] = bc.load_average()
    for row in rows:
        row["packed_fraction_of_peak"] = row["packed_gflops"] / peak
        row["one_by_one_fraction_of_peak"] = row["one_by_one_gflops"] / peak
        row["packed_fraction_of_peak_cpu_time"] = row["packed_gflops_cpu_time"] / peak_cpu
        row["one_by_one_fraction_of_peak_cpu_time"] = row["one_by_one_gflops_cpu_time"] / peak_cpu

    targets = []
    for seq_len in seq_lens:
        found = [
            r
            for r in rows
            if r["k"] == TARGET_K and r["hidden"] == TARGET_HIDDEN and r["seq_len"] == seq_len
        ]
        value = found[0]["speedup"] if found else None
        wanted = target_speedup(args.cell, seq_len)
        targets.append(
            bc.target(
                f"packing speedup K={TARGET_K}, hidden {TARGET_HIDDEN}, seq_len {seq_len}",
                f"packed >= {wanted:g}x one-by-one model-steps/s",
                value,
                None if value is None else value >= wanted,
            )
        )
    if not any(t["passed"] is not None for t in targets):
        targets = [
            bc.target(
                f"packing speedup K={TARGET_K}, hidden {TARGET_HIDDEN}",
                f"packed >= {TARGET_SPEEDUP:g}x one-by-one (config not in this grid)",
                None,
                None,
            )
        ]

    md = markdown(rows, settings, m, targets)
    variant = "quick" if args.quick else ""
    if args.cell != "rnn_tanh":
        variant = f"{variant}_{args.cell}".strip("_")
    path = bc.write_result(NAME, args.out, m, settings, rows, targets, md, variant=variant)
    print(md)
    print(f"\nwrote {path}", file=sys.stderr)
    return bc.finish(targets, args.check)


def markdown(
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    m: dict[str, Any],
    targets: list[dict[str, Any]],
) -> str:
    headers = [
        "K",
        "hidden",
        "seq_len",
        "packed steps/s",
        "one-by-one steps/s",
        "speedup",
        "speedup (CPU time)",
        "packed peak RSS (MiB)",
        "one-by-one peak RSS (MiB)",
        "MFLOP per model-step",
        "packed GFLOP/s (% of peak)",
        "one-by-one GFLOP/s (% of peak)",
        "packed GFLOP/s in CPU time (% of peak)",
        "one-by-one GFLOP/s in CPU time (% of peak)",
    ]
    body = [
        [
            r["k"],
            r["hidden"],
            r["seq_len"],
            f"{r['packed_steps_per_s']:,.0f}",
            f"{r['one_by_one_steps_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['speedup_cpu_time']:.2f}x",
            f"{r['packed_peak_rss_mib']:,.0f}",
            f"{r['one_by_one_peak_rss_mib']:,.0f}",
            f"{r['flops_per_model_step'] / 1e6:,.2f}",
            _rate(r["packed_gflops"], r["packed_fraction_of_peak"]),
            _rate(r["one_by_one_gflops"], r["one_by_one_fraction_of_peak"]),
            _rate(r["packed_gflops_cpu_time"], r["packed_fraction_of_peak_cpu_time"]),
            _rate(r["one_by_one_gflops_cpu_time"], r["one_by_one_fraction_of_peak_cpu_time"]),
        ]
        for r in rows
    ]
    note = (
        f"Model-steps/s (one member, one batch: forward + backward + update), adding task, "
        f"{settings['cell']}, Adam, batch {settings['batch_size']}, "
        f"{settings['model_steps_per_member']} steps per member "
        f"({settings['batches_per_epoch']} batches x {settings['max_epochs']} epochs, "
        f"validation on {settings['val_size']} sequences), one torch thread; whole "
        f"packed / one-member training timed (wall clock; the CPU-time speedup is "
        f"the same ratio in process CPU time, less sensitive to other load on the machine). "
        f"Peak RSS: ru_maxrss of a fresh process "
        f"per (config, mode)."
    )
    peak = settings["peak"]
    flops_note = (
        f"GFLOP/s: the matmul flops of a model-step counted analytically (forward: x Wxh, "
        f"h Whh for T - 1 steps, h Why on the steps the loss reads; backward: the recurrent "
        f"and output products twice, dL/dWxh once; 2 m n k each; elementwise ops not "
        f"counted) times model-steps/s; the whole call is timed, so this is a lower bound on "
        f"the steps' own rate; in CPU time, the same over process CPU seconds, less "
        f"sensitive to other load. Core peak: **{peak['gflops']:,.1f} GFLOP/s** in wall time, "
        f"**{peak['gflops_cpu_time']:,.1f}** in CPU time ({peak['matmul']}; wall "
        f"{peak['gflops_before_grid']:,.1f} before, {peak['gflops_after_grid']:,.1f} after). "
        f"Load average at start {m.get('load_avg_1m')}, at end {settings['load_avg_1m_end']}."
    )
    return "\n\n".join(
        [
            "### Packed vs one-by-one training",
            bc.table(headers, body),
            note,
            flops_note,
            bc.machine_line(m),
            bc.target_lines(targets),
        ]
    )


def _rate(gflops: float, fraction: float) -> str:
    """A GFLOP/s cell with its share of the peak."""
    return f"{gflops:,.2f} ({100 * fraction:.1f} %)"


if __name__ == "__main__":
    raise SystemExit(main())
