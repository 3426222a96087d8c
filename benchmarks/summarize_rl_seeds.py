"""Across-seed summary of RL learning runs saved by ``bench_rl_learning.py`` (one JSON per seed).

One learning curve per seed says little at a CPU budget: whether an agent stumbles on the success
early is luck. This script groups the same setting across seeds and reports, per evaluation frame,
the mean eval success rate and return over seeds (only frames every seed reached), plus per-setting
totals: seeds with any eval success, mean first frame of an eval success, mean area under the
success curve (success-rate × frames, normalised by the common span), and the final eval.

    python benchmarks/summarize_rl_seeds.py \\
        --json benchmarks/results/rl_learning_cpu_button_press.json \\
               benchmarks/results/rl_learning_cpu_button_press_seed2.json \\
        --group "sparse::sparse" \\
        --group "Diffusion Reward (α 0.95)::DR α=0.95 (paper)|diffusion-relative" \\
        --out benchmarks/results/rl_learning_cpu_button_press_seeds.png

``--group LABEL::KEY1|KEY2…``: the runs named KEY1 (or KEY2, … — the first one present) in each
JSON form the setting LABEL; a JSON holding none of the keys is skipped for that setting. ``KEY@TEXT``
takes run KEY only from files whose name contains TEXT.

With two or more groups, each later group is compared with the first, seed by seed (the same seed
gives both settings the same environment seeds), on success AUC, final success, return AUC (mean
return over the common span) and final return: mean paired difference and the two-sided p-value of
an exact sign-flip permutation test (all 2^n sign patterns; n ≤ 16 seeds), with the 95 % t-interval
of the mean difference across seeds. Each setting's final evaluation is also pooled over seeds
(successes of all final evaluation episodes, with a 95 % Wilson interval; it treats the episodes as
independent, so it is narrower than the spread across seeds warrants).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from mmreward.robotics.rl.expert import t_interval


def parse_group(spec: str) -> tuple[str, list[str]]:
    label, sep, keys = spec.partition("::")
    if not sep or not label or not keys:
        raise ValueError(f"--group expects LABEL::KEY1|KEY2…, got {spec!r}")
    return label, [k for k in keys.split("|") if k]


def collect(jsons: list[dict], names: list[str], keys: list[str]) -> list[dict]:
    """One run per JSON holding one of `keys` (first match), tagged with its seed and file."""
    runs = []
    for d, name in zip(jsons, names):
        key = next((k for k in keys if key_matches(k, d, name)), None)
        if key is not None:
            run = key.partition("@")[0]
            runs.append({**d["runs"][run], "seed": d.get("seed"), "file": name, "key": run,
                         "eval_episodes": d.get("eval_episodes")})
    return runs


def key_matches(key: str, d: dict, name: str) -> bool:
    """``KEY`` matches a JSON holding run KEY; ``KEY@TEXT`` only when the file name also contains TEXT
    (two settings of one reward source, e.g. different --success-scale, saved under the same run key)."""
    run, _, text = key.partition("@")
    return run in d.get("runs", {}) and text in os.path.basename(name)


def summarize(runs: list[dict]) -> dict:
    """Mean success / return over seeds at the frames every run evaluated, and per-run totals."""
    if not runs:
        raise ValueError("no runs to summarise")
    common = sorted(set.intersection(*(set(r["frames"]) for r in runs)))
    if len(common) < 2:
        raise ValueError("the runs share fewer than two evaluation frames")
    at = lambda r, key: [r[key][r["frames"].index(f)] for f in common]  # noqa: E731
    succ = [at(r, "success_rate") for r in runs]
    ret = [at(r, "episode_return") for r in runs]
    n = len(runs)

    def auc(s):  # trapezoid over the common frames, / span: 1.0 = always succeeding
        return trapezoid_mean(common, s)

    firsts = [next((f for f, v in zip(common, s) if v > 0), None) for s in succ]
    pooled = None
    if all(r.get("eval_episodes") for r in runs):  # successes of the final evaluations, all seeds
        from mmreward.robotics.rl.expert import wilson_interval

        k = sum(round(s[-1] * r["eval_episodes"]) for s, r in zip(succ, runs))
        n_eps = sum(r["eval_episodes"] for r in runs)
        pooled = {"successes": k, "episodes": n_eps, "rate": k / n_eps, "wilson95": list(wilson_interval(k, n_eps))}
    reached = [f for f in firsts if f is not None]
    return {
        "seeds": [r["seed"] for r in runs],
        "frames": common,
        "mean_success": [sum(col) / n for col in zip(*succ)],
        "mean_return": [sum(col) / n for col in zip(*ret)],
        "per_seed_success": succ,
        "per_seed_return": ret,
        "seeds_with_success": len(reached),
        "mean_first_success_frame": sum(reached) / len(reached) if reached else None,
        "mean_success_auc": sum(auc(s) for s in succ) / n,
        "final_mean_success": sum(s[-1] for s in succ) / n,
        "max_mean_success": max(sum(col) / n for col in zip(*succ)),
        "final_success_pooled": pooled,
        "per_seed_metrics": {r["seed"]: {"success_auc": auc(s), "final_success": s[-1],
                                         "return_auc": trapezoid_mean(common, ret_s), "final_return": ret_s[-1]}
                             for r, s, ret_s in zip(runs, succ, ret)},
    }


def trapezoid_mean(frames: list, values: list) -> float:
    """Mean of a piecewise-linear curve over [frames[0], frames[-1]]."""
    span = frames[-1] - frames[0]
    return sum((a + b) / 2 * (f1 - f0) for a, b, f0, f1 in zip(values, values[1:], frames, frames[1:])) / span


def sign_flip_p(diffs: list[float]) -> float:
    """Two-sided exact p-value of a paired sign-flip permutation test of mean(diffs) = 0."""
    if not diffs:
        return float("nan")
    if len(diffs) > 16:
        raise ValueError("the exact sign-flip test enumerates 2^n patterns: use at most 16 seeds")
    observed = abs(sum(diffs)) - 1e-12
    hits = sum(abs(sum(d * s for d, s in zip(diffs, signs))) >= observed
               for signs in itertools.product((1, -1), repeat=len(diffs)))
    return hits / 2 ** len(diffs)


def compare(base: dict, other: dict) -> dict:
    """Paired differences other − base over the seeds both settings ran, per seed-level metric."""
    seeds = [s for s in other["per_seed_metrics"] if s in base["per_seed_metrics"]]
    out = {"seeds": seeds}
    for metric in ("success_auc", "final_success", "return_auc", "final_return"):
        d = [other["per_seed_metrics"][s][metric] - base["per_seed_metrics"][s][metric] for s in seeds]
        out[metric] = {"diffs": d, "mean_diff": sum(d) / len(d) if d else float("nan"), "ci95": t_interval(d),
                       "p_two_sided": sign_flip_p(d)}
    return out


def plot(path: str, summaries: dict[str, dict], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for i, (label, s) in enumerate(summaries.items()):
        color = f"C{i}"
        for ax, mean, per in ((axes[0], s["mean_success"], s["per_seed_success"]),
                              (axes[1], s["mean_return"], s["per_seed_return"])):
            for y in per:  # thin: each seed
                ax.plot(s["frames"], y, color=color, alpha=0.25, linewidth=1)
            ax.plot(s["frames"], mean, color=color, marker="o", markersize=3, linewidth=2,
                    label=f"{label} (mean of {len(per)} seeds)")
    from mmreward.robotics.rl.recording import save_learning_figure

    return save_learning_figure(fig, axes, path, title=title, legend_size=8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", nargs="+", required=True, help="bench_rl_learning.py result files, one per seed")
    p.add_argument("--group", action="append", required=True, help="LABEL::KEY1|KEY2… (repeatable)")
    p.add_argument("--out", default=None, help="PNG of mean curves (thin lines: single seeds)")
    p.add_argument("--save", default=None, help="write the summary as JSON here")
    args = p.parse_args(argv)
    try:
        groups = [parse_group(g) for g in args.group]
    except ValueError as e:
        p.error(str(e))
    jsons = []
    for path in args.json:
        with open(path) as f:
            jsons.append(json.load(f))
    task = jsons[0].get("task", "?")
    summaries = {}
    for label, keys in groups:
        runs = collect(jsons, args.json, keys)
        if not runs:
            p.error(f"no run named {' or '.join(keys)} in any of the JSON files")
        summaries[label] = summarize(runs)
    for label, s in summaries.items():
        first = s["mean_first_success_frame"]
        print(f"{label}: seeds {s['seeds']}; eval success in {s['seeds_with_success']}/{len(s['seeds'])} seeds"
              f"{f' (first at {first:.0f} frames on average)' if first is not None else ''}; "
              f"success AUC {s['mean_success_auc']:.3f}; final {s['final_mean_success']:.2f}" + (
                  f" ({s['final_success_pooled']['successes']}/{s['final_success_pooled']['episodes']} episodes, "
                  "95 % [{:.2f}, {:.2f}])".format(*s['final_success_pooled']['wilson95'])
                  if s["final_success_pooled"] else ""))
        print("   frames: " + "  ".join(f"{f // 1000}k:{a:.2f}/{b:.0f}"
                                        for f, a, b in zip(s["frames"], s["mean_success"], s["mean_return"])))
    labels = list(summaries)
    comparisons = {}
    for label in labels[1:]:
        c = comparisons[f"{label} vs {labels[0]}"] = compare(summaries[labels[0]], summaries[label])
        print(f"{label} − {labels[0]}, paired over seeds {c['seeds']}: " + "; ".join(
            f"{m} {c[m]['mean_diff']:+.3f} [{c[m]['ci95'][0]:+.3f}, {c[m]['ci95'][1]:+.3f}] (p {c[m]['p_two_sided']:.2f})"
            for m in ("success_auc", "final_success", "return_auc", "final_return")))
    if args.out:
        print(f"plot: {plot(args.out, summaries, f'DrQ-v2 on {task}: mean over seeds')}")
    if args.save:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(args.save, json.dumps({"task": task, "files": args.json, "groups": dict(groups),
                                                 "summary": summaries, "paired": comparisons}, indent=1))
        print(f"json: {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
