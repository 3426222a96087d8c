"""Choose the progress ranker's weight β on validation episodes and report it on test episodes.

Works on the per-episode scores a ``bench_diffusion_reward_quality.py`` run saved in its JSON: the
combined reward's episode score is linear in β (the mean over frames of z(r) + β·z(progress), with
no clip in the benchmark), so every β is scored exactly without re-running the video model.

The evaluation episodes of each (task, group) are split by their index within the group (the file
name's ``_NNNN.npz``): indices below ``--val-episodes`` choose β, the rest only report it. The rule
is fixed before looking at any test figure: among the β of ``--grid`` whose validation figures meet
the issue's goals (success AUC ≥ 0.8, no task ρ above −0.3), take the one with the lowest mean
Spearman ρ(σ) (ties: the smaller β). The test split then gets every method's figures and paired
bootstrap intervals (episodes resampled within each task × group) of the difference to the
nearest-neighbour baseline.

    python benchmarks/select_progress_scale.py --json benchmarks/results/diffusion_reward_quality_progress_eval16.json \\
        --save benchmarks/results/diffusion_reward_progress_scale.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusion_reward_quality import score_task, summarise  # noqa: E402

METRICS = ("spearman_noise_mean", "spearman_noise_max", "success_auc_mean", "expert_vs_random_auc_mean")


def episode_index(ep: dict) -> int:
    m = re.search(r"_(\d+)\.npz$", ep["file"])
    if not m:
        raise ValueError(f"cannot read the episode index from file name {ep['file']!r}")
    return int(m.group(1))


def with_scale(episodes: list[dict], learned: str, progress: str, beta: float, key: str) -> list[dict]:
    return [{**e, key: e[learned] + beta * e[progress]} for e in episodes]


def figures(episodes: list[dict], key: str, tasks: list[str]) -> dict:
    per_task = {t: score_task([e for e in episodes if e["task"] == t], key) for t in tasks}
    return {"summary": summarise(per_task, tasks), "per_task_spearman": {t: r["spearman_noise"] for t, r in per_task.items()}}


def meets_goals(s: dict) -> bool:
    return s["success_auc_mean"] >= 0.8 and s["spearman_noise_max"] <= -0.3


def bootstrap_diff(episodes: list[dict], key: str, base: str, tasks: list[str], n: int, seed: int) -> dict:
    """Paired bootstrap of (key − base) for each summary metric: the same resampled episodes score both.
    Episodes are resampled with replacement within each task × policy × σ cell (every group keeps its size);
    the interval is the 2.5 / 97.5 percentiles of the differences. A resample where a metric is undefined for
    either method (e.g. success AUC when a resample's episodes all succeed) has no difference: the interval
    and P(better) / P(equal) are over the ``n_defined`` resamples that have one (NaN when none has), and
    ``n_defined`` says how many that is. ``n`` = 0 skips the bootstrap (``{}``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"bootstrap resamples must be an integer >= 0 (0: skip), got {n!r}")
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    cells: dict[tuple, list[dict]] = {}
    for e in episodes:
        cells.setdefault((e["task"], e["policy"], e["noise"]), []).append(e)
    diffs = {m: [] for m in METRICS}
    for _ in range(n):
        sample = [c[i] for c in cells.values() for i in rng.integers(0, len(c), len(c))]
        a, b = figures(sample, key, tasks)["summary"], figures(sample, base, tasks)["summary"]
        for m in METRICS:
            diffs[m].append(a[m] - b[m])
    out = {}
    for m, d in diffs.items():
        d = np.asarray(d, np.float64)
        d = d[np.isfinite(d)]
        if not len(d):
            out[m] = {"low": float("nan"), "high": float("nan"), "p_better": float("nan"), "p_equal": float("nan"),
                      "n_defined": 0}
            continue
        better = d < 0 if m.startswith("spearman") else d > 0  # lower ρ(σ) is better, higher AUC is
        out[m] = {"low": float(np.quantile(d, 0.025)), "high": float(np.quantile(d, 0.975)),
                  "p_better": float(np.mean(better)), "p_equal": float(np.mean(d == 0)), "n_defined": int(len(d))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="a quality-benchmark JSON with per-episode scores")
    ap.add_argument("--learned", default="dr_relative_likelihood", help="episode-score key of the video-model reward")
    ap.add_argument("--progress", default="progress", help="episode-score key of the progress ranker")
    ap.add_argument("--baseline", default="nn_expert", help="baseline the bootstrap compares against")
    ap.add_argument("--grid", default="0,0.25,0.5,0.75,1,1.5,2,3", help="β values to try")
    ap.add_argument("--val-episodes", type=int, default=8, help="episodes per group (by index) that choose β")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples on the test split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="", help="write the selection and test figures here (JSON)")
    args = ap.parse_args(argv)

    src = json.load(open(args.json))
    tasks, heldout = src["setup"]["train_tasks"], src["setup"]["heldout_tasks"]
    eps = src["episodes"]
    for e in eps:
        if args.learned not in e or args.progress not in e:
            raise SystemExit(f"{args.json}: episodes lack {args.learned!r} / {args.progress!r} scores")
    val = [e for e in eps if episode_index(e) < args.val_episodes]
    test = [e for e in eps if episode_index(e) >= args.val_episodes]
    if not val or not test:
        raise SystemExit(f"--val-episodes {args.val_episodes} leaves an empty split ({len(val)} / {len(test)} episodes)")
    grid = [float(b) for b in args.grid.split(",")]

    print(f"validation: {len(val)} episodes, test: {len(test)} episodes")
    print(f"{'β':>5} {'val ρ mean':>11} {'worst':>7} {'succ AUC':>9} {'exp/rnd':>8}  goals")
    sweep = {}
    for beta in grid:
        s = figures(with_scale(val, args.learned, args.progress, beta, "combined"), "combined", tasks)["summary"]
        sweep[beta] = s
        print(f"{beta:5.2f} {s['spearman_noise_mean']:11.3f} {s['spearman_noise_max']:7.3f} {s['success_auc_mean']:9.3f} "
              f"{s['expert_vs_random_auc_mean']:8.3f}  {'met' if meets_goals(s) else '-'}")
    ok = [b for b in grid if meets_goals(sweep[b])]
    if not ok:
        raise SystemExit("no β on the grid meets the goals on the validation split")
    chosen = min(ok, key=lambda b: (sweep[b]["spearman_noise_mean"], b))
    print(f"chosen on validation: β = {chosen:g}")

    key = f"combined_beta{chosen:g}"
    test_s = with_scale(test, args.learned, args.progress, chosen, key)
    test_s = with_scale(test_s, args.learned, args.progress, 1.0, "combined_beta1")
    methods = [key] + (["combined_beta1"] if chosen != 1.0 else []) + [args.learned, args.progress, "frame_diff",
                                                                         args.baseline]
    methods = list(dict.fromkeys(m for m in methods if m in test_s[0]))
    report = {}
    print(f"\ntest split ({len(test)} episodes)\n{'method':<28} {'ρ mean':>7} {'worst':>7} {'succ AUC':>9} {'exp/rnd':>8}"
          f" {'held-out ρ':>11} {'held-out exp/rnd':>17}")
    for m in methods:
        tr = figures(test_s, m, tasks)
        ho = figures(test_s, m, heldout)["summary"] if heldout else {}
        report[m] = {"train_tasks": tr["summary"], "per_task_spearman": tr["per_task_spearman"], "heldout_tasks": ho}
        s = tr["summary"]
        print(f"{m:<28} {s['spearman_noise_mean']:7.3f} {s['spearman_noise_max']:7.3f} {s['success_auc_mean']:9.3f} "
              f"{s['expert_vs_random_auc_mean']:8.3f} {ho.get('spearman_noise_mean', float('nan')):11.3f} "
              f"{ho.get('expert_vs_random_auc_mean', float('nan')):17.3f}")
    boot = {m: bootstrap_diff(test_s, m, args.baseline, tasks, args.bootstrap, args.seed)
            for m in dict.fromkeys([key, "combined_beta1"])}
    for m, b in boot.items():
        print(f"\n{m} − {args.baseline} on the test split (95% paired bootstrap, {args.bootstrap} resamples):")
        for metric, d in b.items():
            print(f"  {metric:<28} [{d['low']:+.3f}, {d['high']:+.3f}]  P(better) {d['p_better']:.2f}"
                  f"  P(equal) {d['p_equal']:.2f}")
    if args.save:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(args.save, json.dumps({
            "source": args.json, "rule": "lowest validation mean ρ among β meeting success AUC ≥ 0.8 and worst ρ ≤ −0.3",
            "val_episodes_per_group": args.val_episodes, "validation_sweep": {f"{b:g}": s for b, s in sweep.items()},
            "chosen_beta": chosen, "test": report, "bootstrap_vs_baseline": boot, "baseline": args.baseline,
        }, indent=1) + "\n")
        print(f"json: {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
