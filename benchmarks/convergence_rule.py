"""Run: python benchmarks/convergence_rule.py [--quick]  (full grid ~15-20 min on 2 cores)

Question: which convergence rule gives a stable convergence epoch? Today a trial converges
at the FIRST epoch whose validation loss (``val_size`` = 256 sequences, one evaluation per
epoch) is at or below the task's target (adding: MSE 0.01), and that first crossing is
noisy. The candidate rule has two knobs: ``patience`` k (k consecutive evaluations at or
below the target; the reported epoch is the first of them) and ``val_size``. This script
measures, for k in 1..5 and val_size in {256, 1024, 4096}, how the epoch each rule reports
compares with the least noisy one, so the defaults can be picked from numbers.

How. The training stream of a trial comes from ``data_seed`` and its validation set from a
separate generator (``data_seed + models.train._VAL_SEED_OFFSET``), so ``val_size`` changes
the evaluation only, never the weights: the same spec trained at val_size 256, 1024 and 4096
follows the same trajectory (checked here: every trial's ``train_loss`` history is
identical across val sizes). The validation sets are not nested, though: the adding task's
``_sample`` draws all the values and then all the marker positions from one private
generator, so the first 256 sequences of a 4096 draw are not the 256 draw (also checked
here). Each spec is therefore trained once per val_size, with ``stop_on_converge=False``
and the default divergence rule, which gives full validation curves; every rule is then
applied offline to ``TrialResult.history[i].val_loss``. The val_size-4096 curve is the
"truth" (the least evaluation noise).

Grid: adding task, rnn_tanh, adam, clip 1.0, batch 32, 50 batches per epoch, a 50-epoch
budget, data_seed = seed; hidden 4 and 8 at seq_len 5 and 10 with xavier, orthogonal,
torch_default, glorot_uniform and uniform01, lr 3e-3 and 1e-2; hidden 64 with the first
four schemes at seq_len 5 and 10 (both lrs) and 30 (lr 3e-3). Left out because a pilot
(one seed, 50 epochs) had no trial within reach of the target: hidden 4 and 8 at seq_len
30 (best validation MSE 0.014-0.14) and hidden 64 at seq_len 30 with lr 1e-2 (>= 0.15).
Same-shape trials are trained as packs (``models.train_pack``; a member's result equals
its solo result), one torch thread.

Reported, for each (val_size, k): how many trials the rule calls converged; (a) its
disagreement with the truth rule (same k at 4096, and k=1 at 4096): the share of trials
whose epoch differs (converged/not counted as a difference), the mean absolute difference
where both converged; (b) false convergences: the share of the trials it calls converged
that the 4096 curve says are not converged at the end of the budget (the last ``--tail``
epochs all above the target, or diverged, or never at/below it), and the share whose 4096
loss goes back above the target at any later epoch; (c) the delay k costs: the shift of the
reported epoch against k=1 at the same val_size and the decision delay (shift + k - 1:
the epochs one must train past the reported one before the rule can say so). Also the
evaluation noise, the std of (val_256 - val_4096) / val_4096 (and for 1024) at epochs
where the 4096 loss is within a factor 2 of the target, the epoch-to-epoch change of the
4096 curve there (training noise, which no val_size removes), and what a validation pass
costs at each val_size relative to a training epoch.

Results: ``benchmarks/results/convergence_rule.json`` (``convergence_rule_quick.json``
with ``--quick``), and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # models/ importable without an install
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.spec import TrialResult, TrialSpec  # noqa: E402
from models.tasks import get_task  # noqa: E402
from models.train import _VAL_SEED_OFFSET, train_pack  # noqa: E402

SCHEMES = ("xavier", "orthogonal", "torch_default", "glorot_uniform")
"""The init schemes every hidden size gets; uniform01 is added at hidden 4 and 8."""
FIXED = {
    "task": "adding",
    "cell": "rnn_tanh",
    "optimizer": "adam",
    "clip": 1.0,
    "batch_size": 32,
    "batches_per_epoch": 50,
    "stop_on_converge": False,
}
"""TrialSpec fields shared by every trial."""
NEAR = 2.0
""""Near the target": the 4096 loss within a factor NEAR of it (noise statistics)."""


def full_grid(seeds: int) -> list[dict[str, Any]]:
    """Groups of (hidden, seq_len, schemes, lrs, seeds); see the module docstring."""
    s = list(range(seeds))
    small = [*SCHEMES, "uniform01"]
    groups = [
        {"hidden": h, "seq_len": n, "schemes": small, "lrs": [3e-3, 1e-2], "seeds": s}
        for h in (4, 8)
        for n in (5, 10)
    ]
    groups += [
        {"hidden": 64, "seq_len": n, "schemes": list(SCHEMES), "lrs": [3e-3, 1e-2], "seeds": s}
        for n in (5, 10)
    ]
    groups.append(
        {"hidden": 64, "seq_len": 30, "schemes": list(SCHEMES), "lrs": [3e-3], "seeds": s}
    )
    return groups


def quick_grid() -> list[dict[str, Any]]:
    return [
        {
            "hidden": 8,
            "seq_len": 5,
            "schemes": ["xavier", "orthogonal"],
            "lrs": [1e-2],
            "seeds": [0, 1],
        }
    ]


# --------------------------------------------------------------------------- rules


def rule_epoch(epochs: Sequence[int], vals: Sequence[float], target: float, k: int) -> int | None:
    """First epoch of the first run of k consecutive evaluations at or below ``target``."""
    run = 0
    for i, v in enumerate(vals):
        if math.isfinite(v) and v <= target:
            run += 1
            if run == k:
                return epochs[i - k + 1]
        else:
            run = 0
    return None


def not_converged_at_end(vals: Sequence[float], target: float, budget: int, tail: int) -> bool:
    """Whether the (truth) curve ends above the target for good.

    True if it stopped before the budget (diverged), was never at/below the target, or
    its last ``tail`` evaluations are all above the target.
    """
    if len(vals) < budget:
        return True
    if not any(math.isfinite(v) and v <= target for v in vals):
        return True
    return all(not (v <= target) for v in vals[-tail:])


def above_after(vals: Sequence[float], epochs: Sequence[int], epoch: int, target: float) -> bool:
    """Whether the curve is above the target at some epoch after ``epoch``."""
    return any(e > epoch and not (v <= target) for e, v in zip(epochs, vals, strict=True))


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


# --------------------------------------------------------------------------- training


def make_specs(group: dict[str, Any], epochs: int, val_size: int) -> list[TrialSpec]:
    return [
        TrialSpec(
            **FIXED,
            hidden=group["hidden"],
            seq_len=group["seq_len"],
            init=scheme,
            lr=lr,
            max_epochs=epochs,
            val_size=val_size,
            seed=seed,
            data_seed=seed,
        )
        for scheme in group["schemes"]
        for lr in group["lrs"]
        for seed in group["seeds"]
    ]


def trial_key(spec: TrialSpec) -> str:
    return f"h{spec.hidden}_L{spec.seq_len}_{spec.init}_lr{spec.lr:g}_s{spec.seed}"


def train_all(
    groups: list[dict[str, Any]], epochs: int, val_sizes: Sequence[int], max_pack: int
) -> tuple[dict[str, dict[int, TrialResult]], list[dict[str, Any]]]:
    """Train every spec once per val_size; returns results by trial key and pack timings."""
    results: dict[str, dict[int, TrialResult]] = {}
    packs: list[dict[str, Any]] = []
    for group in groups:
        for vs in val_sizes:
            specs = make_specs(group, epochs, vs)
            for start in range(0, len(specs), max_pack):
                chunk = specs[start : start + max_pack]
                t0 = time.perf_counter()
                out = train_pack(chunk)
                wall = time.perf_counter() - t0
                member_epochs = out[0].extra.get("member_epochs")
                packs.append(
                    {
                        "hidden": group["hidden"],
                        "seq_len": group["seq_len"],
                        "val_size": vs,
                        "pack_size": len(chunk),
                        "member_epochs": member_epochs,
                        "wall_s": round(wall, 3),
                    }
                )
                print(
                    f"  hidden {group['hidden']:>2} seq_len {group['seq_len']:>2} "
                    f"val_size {vs:>4}: {len(chunk)} trials, {wall:.1f} s",
                    flush=True,
                )
                for r in out:
                    results.setdefault(trial_key(r.spec), {})[vs] = r
    return results, packs


def check_nested(seq_len: int, small: int, large: int, data_seed: int = 0) -> bool:
    """Whether the first ``small`` sequences of a ``large`` validation draw are the small one."""
    task = get_task("adding", seq_len)
    seed = data_seed + _VAL_SEED_OFFSET
    xs, ys = task.sample(torch.Generator().manual_seed(seed), small, "val")
    xl, yl = task.sample(torch.Generator().manual_seed(seed), large, "val")
    return bool(torch.equal(xs, xl[:small]) and torch.equal(ys, yl[:small]))


def time_evaluation(
    shapes: Sequence[tuple[int, int]], val_sizes: Sequence[int], epochs: int, repeats: int
) -> list[dict[str, Any]]:
    """Cost of one validation pass at each val_size relative to one training epoch.

    Per shape, a pack of 8 trials is trained for ``epochs`` epochs at val_size 8 (evaluation
    nearly free) and at each val_size (nothing stops: target tiny, divergence off); the
    evaluation cost is the extra wall time over the ``epochs + 1`` passes (the initial loss
    is one more). Best of ``repeats``.
    """
    rows = []
    for hidden, seq_len in shapes:
        walls: dict[int, float] = {}
        for vs in [8, *val_sizes]:
            specs = [
                TrialSpec(
                    **FIXED,
                    hidden=hidden,
                    seq_len=seq_len,
                    init=SCHEMES[i % len(SCHEMES)],
                    lr=3e-3,
                    max_epochs=epochs,
                    val_size=vs,
                    seed=i,
                    data_seed=i,
                    target_loss=1e-12,
                    divergence_factor=1e12,
                )
                for i in range(8)
            ]
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                train_pack(specs)
                best = min(best, time.perf_counter() - t0)
            walls[vs] = best
        train_epoch = walls[8] / epochs
        for vs in val_sizes:
            per_eval = max(walls[vs] - walls[8], 0.0) / (epochs + 1)
            rows.append(
                {
                    "hidden": hidden,
                    "seq_len": seq_len,
                    "val_size": vs,
                    "train_epoch_s": round(train_epoch, 4),
                    "eval_s": round(per_eval, 4),
                    "eval_per_train_epoch": round(per_eval / train_epoch, 3),
                }
            )
        print(f"  timed evaluation at hidden {hidden} seq_len {seq_len}", flush=True)
    return rows


# --------------------------------------------------------------------------- analysis


def curves(results: dict[str, dict[int, TrialResult]]) -> dict[str, dict[int, Any]]:
    """Per trial and val_size: (epochs, val losses)."""
    return {
        key: {
            vs: ([h.epoch for h in r.history], [h.val_loss for h in r.history])
            for vs, r in by_vs.items()
        }
        for key, by_vs in results.items()
    }


def training_identical(results: dict[str, dict[int, TrialResult]]) -> dict[str, Any]:
    """Whether each trial's train_loss and grad_norm histories match across val sizes."""
    same, differ = 0, []
    for key, by_vs in results.items():
        histories = [
            [(h.train_loss, h.grad_norm) for h in r.history] for _, r in sorted(by_vs.items())
        ]
        n = min(len(h) for h in histories)
        prefix_equal = all(h[:n] == histories[0][:n] for h in histories)
        length_equal = all(len(h) == len(histories[0]) for h in histories)
        if prefix_equal and length_equal:
            same += 1
        else:
            differ.append(
                {"trial": key, "prefix_equal": prefix_equal, "lengths_equal": length_equal}
            )
    return {"trials": len(results), "identical": same, "different": differ}


def rule_table(
    data: dict[str, dict[int, Any]],
    val_sizes: Sequence[int],
    ks: Sequence[int],
    target: float,
    budget: int,
    tail: int,
) -> list[dict[str, Any]]:
    truth_vs = max(val_sizes)
    keys = sorted(data)
    epoch = {
        (key, vs, k): rule_epoch(*data[key][vs], target, k)
        for key in keys
        for vs in val_sizes
        for k in ks
    }
    rows = []
    for vs in val_sizes:
        for k in ks:
            row: dict[str, Any] = {"val_size": vs, "k": k}
            mine = [epoch[(key, vs, k)] for key in keys]
            conv = [key for key, e in zip(keys, mine, strict=True) if e is not None]
            row["converged"] = len(conv)
            row["trials"] = len(keys)
            for name, ref_k in (("truth_same_k", k), ("truth_k1", 1)):
                ref = [epoch[(key, truth_vs, ref_k)] for key in keys]
                differs = [a != b for a, b in zip(mine, ref, strict=True)]
                both = [
                    abs(a - b)
                    for a, b in zip(mine, ref, strict=True)
                    if a is not None and b is not None
                ]
                status = sum((a is None) != (b is None) for a, b in zip(mine, ref, strict=True))
                row[f"differ_{name}"] = sum(differs) / len(keys)
                row[f"mad_{name}"] = _mean(both)
                row[f"status_mismatch_{name}"] = status
            false = [
                key
                for key in conv
                if not_converged_at_end(data[key][truth_vs][1], target, budget, tail)
            ]
            later = [
                key
                for key in conv
                if above_after(
                    data[key][truth_vs][1], data[key][truth_vs][0], epoch[(key, vs, k)], target
                )
            ]
            row["false_converged"] = len(false)
            row["false_share"] = len(false) / len(conv) if conv else None
            row["later_above_share"] = len(later) / len(conv) if conv else None
            shifts = [
                epoch[(key, vs, k)] - epoch[(key, vs, 1)]
                for key in conv
                if epoch[(key, vs, 1)] is not None
            ]
            row["shift_vs_k1"] = _mean(shifts)
            row["decision_delay"] = None if not shifts else _mean(shifts) + k - 1
            row["lost_vs_k1"] = sum(
                epoch[(key, vs, 1)] is not None and epoch[(key, vs, k)] is None for key in keys
            )
            rows.append(row)
    return rows


def noise_table(
    data: dict[str, dict[int, Any]], val_sizes: Sequence[int], target: float
) -> dict[str, Any]:
    truth_vs = max(val_sizes)
    lo, hi = target / NEAR, target * NEAR
    out: dict[str, Any] = {"near": [lo, hi], "eval": [], "training": {}}
    for vs in val_sizes:
        if vs == truth_vs:
            continue
        rel = []
        for by_vs in data.values():
            (e_small, v_small), (e_big, v_big) = by_vs[vs], by_vs[truth_vs]
            big = dict(zip(e_big, v_big, strict=True))
            for e, v in zip(e_small, v_small, strict=True):
                t = big.get(e)
                if t is not None and math.isfinite(v) and lo <= t <= hi:
                    rel.append((v - t) / t)
        out["eval"].append(
            {
                "val_size": vs,
                "points": len(rel),
                "mean_rel_diff": _mean(rel),
                "std_rel_diff": _std(rel),
                "share_other_side": None,
            }
        )
        # How often the small set puts the loss on the other side of the target.
        flips = total = 0
        for by_vs in data.values():
            (e_small, v_small), (e_big, v_big) = by_vs[vs], by_vs[truth_vs]
            big = dict(zip(e_big, v_big, strict=True))
            for e, v in zip(e_small, v_small, strict=True):
                t = big.get(e)
                if t is not None and lo <= t <= hi:
                    total += 1
                    flips += (v <= target) != (t <= target)
        out["eval"][-1]["share_other_side"] = flips / total if total else None
    steps = []
    crossings = []
    for by_vs in data.values():
        _, v = by_vs[truth_vs]
        steps += [
            (b - a) / a for a, b in itertools.pairwise(v) if lo <= a <= hi and math.isfinite(b)
        ]
        below = [x <= target for x in v]
        crossings.append(sum(a != b for a, b in itertools.pairwise(below)))
    out["training"] = {
        "val_size": truth_vs,
        "points": len(steps),
        "std_rel_step": _std(steps),
        "trials_recrossing": sum(c >= 2 for c in crossings),
        "mean_crossings_when_any": _mean([c for c in crossings if c > 0]),
    }
    return out


# --------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout
        except OSError:
            return ""

    commit = git("rev-parse", "HEAD").strip()
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "models").splitlines()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "models_uncommitted_changes": [line[3:] for line in dirty],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_1m": load,
    }


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def markdown(rows: list[dict[str, Any]], noise: dict[str, Any], cost: list[dict[str, Any]]) -> str:
    head = [
        "val_size",
        "k",
        "conv",
        "differ vs 4096 same k",
        "MAD",
        "differ vs 4096 k=1",
        "MAD",
        "false conv",
        "later above",
        "shift vs k=1",
        "decision delay",
        "lost vs k=1",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["val_size"],
            r["k"],
            f"{r['converged']}/{r['trials']}",
            f"{100 * r['differ_truth_same_k']:.0f}%",
            _fmt(r["mad_truth_same_k"]),
            f"{100 * r['differ_truth_k1']:.0f}%",
            _fmt(r["mad_truth_k1"]),
            f"{r['false_converged']} ({_pct(r['false_share'], 1)})",
            _pct(r["later_above_share"], 0),
            _fmt(r["shift_vs_k1"]),
            _fmt(r["decision_delay"]),
            r["lost_vs_k1"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lo, hi = noise["near"]
    lines.append("")
    lines.append(f"Evaluation noise where the 4096 loss is in [{lo:g}, {hi:g}]:")
    lines.append("")
    lines.append("| val_size | points | mean rel diff | std rel diff | other side of target |")
    lines.append("|---|---|---|---|---|")
    for e in noise["eval"]:
        lines.append(
            f"| {e['val_size']} | {e['points']} | {_fmt(e['mean_rel_diff'], 4)} | "
            f"{_fmt(e['std_rel_diff'], 4)} | {_fmt(100 * (e['share_other_side'] or 0), 1)}% |"
        )
    t = noise["training"]
    lines.append("")
    lines.append(
        f"Training noise (4096 curve, epoch to epoch, near the target): std of relative step "
        f"{_fmt(t['std_rel_step'], 4)} over {t['points']} steps; {t['trials_recrossing']} "
        f"trials cross the target more than once (mean {_fmt(t['mean_crossings_when_any'], 1)} "
        f"crossings among those that cross)."
    )
    lines.append("")
    lines.append("| hidden | seq_len | val_size | train epoch s | eval s | eval / train epoch |")
    lines.append("|---|---|---|---|---|---|")
    for c in cost:
        lines.append(
            f"| {c['hidden']} | {c['seq_len']} | {c['val_size']} | {c['train_epoch_s']:.3f} | "
            f"{c['eval_s']:.3f} | {c['eval_per_train_epoch']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny grid (< 30 s)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    parser.add_argument("--epochs", type=int, default=50, help="epoch budget")
    parser.add_argument("--val-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--max-k", type=int, default=5, help="patience values 1..max-k")
    parser.add_argument("--tail", type=int, default=5, help="epochs above target = not conv.")
    parser.add_argument("--max-pack", type=int, default=50, help="most trials per pack")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-timing", action="store_true", help="skip the evaluation timing")
    parser.add_argument("--out", type=Path, help="result file (default: benchmarks/results/)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.quick:
        groups, epochs = quick_grid(), 8
        timing_shapes, timing_epochs, repeats = [(8, 5)], 2, 1
    else:
        groups, epochs = full_grid(args.seeds), args.epochs
        timing_shapes = sorted({(g["hidden"], g["seq_len"]) for g in groups})
        timing_epochs, repeats = 3, 2
    val_sizes = sorted(args.val_sizes)
    ks = list(range(1, args.max_k + 1))
    target = get_task("adding", 5).default_target
    out = args.out or RESULTS / (
        "convergence_rule_quick.json" if args.quick else "convergence_rule.json"
    )

    started = time.perf_counter()
    info = machine()
    nested = {
        f"seq_len {n}: first {a} of {b}": check_nested(n, a, b)
        for n in sorted({g["seq_len"] for g in groups})
        for a, b in itertools.pairwise(val_sizes)
    }
    print(f"validation sets nested (prefix): {nested}", flush=True)
    print(
        f"training {sum(len(make_specs(g, epochs, 1)) for g in groups)} trials x "
        f"{len(val_sizes)} val sizes, {epochs} epochs",
        flush=True,
    )
    results, packs = train_all(groups, epochs, val_sizes, args.max_pack)
    train_wall = time.perf_counter() - started
    identical = training_identical(results)
    print(f"training identical across val sizes: {identical['identical']}/{identical['trials']}")
    data = curves(results)
    rows = rule_table(data, val_sizes, ks, target, epochs, args.tail)
    noise = noise_table(data, val_sizes, target)
    cost = (
        [] if args.no_timing else time_evaluation(timing_shapes, val_sizes, timing_epochs, repeats)
    )
    wall_by_vs = {
        vs: round(sum(p["wall_s"] for p in packs if p["val_size"] == vs), 2) for vs in val_sizes
    }
    md = markdown(rows, noise, cost)
    wall = time.perf_counter() - started
    doc = {
        "benchmark": "convergence_rule",
        "question": __doc__.splitlines()[2].strip() + " (see the script's docstring)",
        "machine": info,
        "settings": {
            "command": " ".join(
                ["python", "benchmarks/convergence_rule.py", *(argv or sys.argv[1:])]
            ),
            "fixed": FIXED,
            "grid": groups,
            "epochs": epochs,
            "val_sizes": val_sizes,
            "ks": ks,
            "target": target,
            "tail": args.tail,
            "truth_val_size": max(val_sizes),
            "threads": args.threads,
            "max_pack": args.max_pack,
        },
        "checks": {"validation_sets_nested": nested, "training_identical": identical},
        "results": {
            "rules": rows,
            "noise": noise,
            "evaluation_cost": cost,
            "study_wall_s_by_val_size": wall_by_vs,
            "packs": packs,
            "trials": {
                key: {
                    "converged_epoch_code": {
                        vs: results[key][vs].converged_epoch for vs in val_sizes
                    },
                    "diverged_epoch": {vs: results[key][vs].diverged_epoch for vs in val_sizes},
                    "val_loss": {
                        vs: [float(f"{v:.6g}") for v in data[key][vs][1]] for vs in val_sizes
                    },
                }
                for key in sorted(results)
            },
        },
        "markdown": md,
        "wall_s": {"training": round(train_wall, 1), "total": round(wall, 1)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    print()
    print(md)
    print()
    print(f"study wall by val_size (s): {wall_by_vs}")
    print(f"wrote {out} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
