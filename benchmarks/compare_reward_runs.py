"""Pool several quality-benchmark evaluations of the same rewards and compare them to a baseline.

One ``bench_diffusion_reward_quality.py`` run scores 8 episodes per (task, noise level); with so few,
a reward's mean Spearman ρ(σ) moves by ±0.1 between evaluation sets, more than most differences
between models. This script takes several *independent* evaluation sets (different scene seeds, or
disjoint episode-index ranges of one run), computes every figure within each set — exactly as the
benchmark does — and averages over the sets. A paired bootstrap (episodes resampled within each set ×
task × group; every method scored on the same resample) gives intervals of the difference to a
baseline.

    python benchmarks/compare_reward_runs.py \\
        benchmarks/results/diffusion_reward_quality_progress.json \\
        benchmarks/results/diffusion_reward_quality_progress_eval16.json@8: \\
        benchmarks/results/diffusion_reward_quality_fresh3000.json \\
        --save pooled.json

``PATH@LO:HI`` keeps episodes whose index within their group (the file name's ``_NNNN.npz``) is in
[LO, HI); the sets must not share episodes (the script refuses repeated files).

Two models scored on the *same* episodes (same eval seeds, e.g. a new checkpoint against the previous
one) are compared with ``--merge PREFIX=SPEC,SPEC,...``: one spec per positional set, in order, each
holding exactly that set's episodes; its scores join as ``PREFIX:method`` and can be the baseline:

    python benchmarks/compare_reward_runs.py NEW_A.json NEW_B.json@8: NEW_C.json \
        --merge v1=OLD_A.json,OLD_B.json@8:,OLD_C.json --baseline v1:dr_relative_likelihood+progress

An episode's score is the mean of its per-frame rewards, so a reward that adds terms scored in
different runs is the weighted sum of their episode scores: ``--combine NAME=KEY,W*KEY,...`` adds it
as method NAME (e.g. a rule of one run plus 8 × the goal term of another, merged as ``g:``):

    python benchmarks/compare_reward_runs.py A_displacement.json --merge g=A_goal.json \
        --combine "rule+goal8=dr_relative_likelihood+progress+disp4,8*g:goal_tokens"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusion_reward_quality import exploit_passed, score_task, summarise  # noqa: E402
from select_progress_scale import METRICS as NOISE_METRICS, episode_index  # noqa: E402

# pooled summary metrics: the noise / success / expert figures, time reversal and the exploit checks
METRICS = NOISE_METRICS + ("forward_vs_reversed_auc_mean", "random_vs_frozen_start_auc_mean", "random_vs_hover_auc_mean")


def load_set(spec: str) -> dict:
    path, _, rng = spec.partition("@")
    src = json.load(open(path))
    lo, hi = 0, 1 << 30
    if rng:
        a, _, b = rng.partition(":")
        lo, hi = int(a or 0), int(b or 1 << 30)
    eps = [e for e in src["episodes"] if lo <= episode_index(e) < hi]
    if not eps:
        raise SystemExit(f"{spec}: no episodes in index range [{lo}, {hi})")
    seed = src["setup"].get("eval_seed", 1000)
    return {"spec": spec, "episodes": eps, "train_tasks": src["setup"]["train_tasks"],
            "heldout_tasks": src["setup"]["heldout_tasks"],
            "files": {f"seed{seed}/{e['task']}/{e['file']}" for e in eps}}


def merge_scores(sets: list[dict], merge: str) -> None:
    """Add the scores of another run of the same episodes to each set, as ``PREFIX:method``."""
    prefix, _, specs = merge.partition("=")
    specs = [x for x in specs.split(",") if x]
    if not prefix or len(specs) != len(sets):
        raise SystemExit(f"--merge needs PREFIX=SPEC,... with one spec per set ({len(sets)}), got {merge!r}")
    for s, spec in zip(sets, specs):
        other = load_set(spec)
        if other["files"] != s["files"]:
            raise SystemExit(f"--merge {spec} does not hold the same episodes as {s['spec']} "
                             f"({len(other['files'] ^ s['files'])} differ)")
        by_file = {(e["task"], e["file"]): e for e in other["episodes"]}
        for e in s["episodes"]:
            o = by_file[(e["task"], e["file"])]
            if (o["policy"], o["noise"], o["success"], o["env_return"]) != (e["policy"], e["noise"], e["success"], e["env_return"]):
                raise SystemExit(f"--merge {spec}: {e['task']}/{e['file']} differs from {s['spec']}'s episode of that name")
            e.update({f"{prefix}:{k}": v for k, v in o.items() if isinstance(v, float) and k not in ("noise", "env_return")})


def parse_combination(spec: str) -> tuple[str, list[tuple[float, str]]]:
    """``NAME=KEY,W*KEY,...`` → (NAME, [(W, KEY), ...]); keys may contain ``+``, so terms are comma-separated."""
    name, eq, terms = spec.partition("=")
    if not name or not eq or not terms:
        raise SystemExit(f"--combine needs NAME=KEY,W*KEY,..., got {spec!r}")
    parsed = []
    for term in terms.split(","):
        weight, star, key = term.partition("*")
        try:
            parsed.append((float(weight), key) if star else (1.0, weight))
        except ValueError:
            raise SystemExit(f"--combine {spec!r}: {weight!r} is not a weight (write W*KEY)") from None
    return name, parsed


def add_combination(sets: list[dict], name: str, terms: list[tuple[float, str]]) -> None:
    for s in sets:
        missing = [k for _, k in terms if k not in s["episodes"][0]]
        if missing:
            raise SystemExit(f"--combine {name}: {missing} not scored in {s['spec']}")
        for e in s["episodes"]:
            e[name] = float(sum(w * e[k] for w, k in terms))


def exploit_tasks(episodes: list[dict], key: str, tasks: list[str]) -> list[str]:
    """Tasks whose random episodes outscore both the frozen-start and the hovering ones on average
    (the quality benchmark's exploit check, per task); tasks without exploit episodes are left out."""
    def group_means(t: str) -> dict:
        return {g: float(np.mean([e[key] for e in episodes if e["task"] == t and e["policy"] == g] or [np.nan]))
                for g in ("random", "frozen_start", "hover")}

    return [t for t in tasks if exploit_passed(group_means(t))]


def set_summary(episodes: list[dict], key: str, tasks: list[str]) -> dict:
    per_task = {t: score_task([e for e in episodes if e["task"] == t], key) for t in tasks}
    return summarise(per_task, tasks)


def pooled(sets: list[dict], key: str, which: str) -> dict:
    """Mean over evaluation sets of each summary metric (NaN-free sets only, e.g. success AUC)."""
    rows = [set_summary(s["episodes"], key, s[which]) for s in sets if s[which]]
    with warnings.catch_warnings():  # a metric undefined in every set (no failures anywhere) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {m: float(np.nanmean([r[m] for r in rows])) for m in METRICS} if rows else {}


def resample(sets: list[dict], rng: np.random.Generator) -> list[dict]:
    out = []
    for s in sets:
        cells: dict[tuple, list[dict]] = {}
        for e in s["episodes"]:
            cells.setdefault((e["task"], e["policy"], e["noise"]), []).append(e)
        out.append({**s, "episodes": [c[i] for c in cells.values() for i in rng.integers(0, len(c), len(c))]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="quality-benchmark JSONs, each optionally PATH@LO:HI (episode index range)")
    ap.add_argument("--methods", default="", help="episode-score keys to report (default: every key the sets share); "
                    "env_return, the environment's own dense return (privileged state), is a reference to name here")
    ap.add_argument("--baseline", default="nn_expert", help="method the bootstrap compares against")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", default="", help="PREFIX=SPEC,...: another run's scores of the same episodes, "
                    "one spec per set in order, joined as PREFIX:method")
    ap.add_argument("--combine", action="append", default=[],
                    help="NAME=KEY,W*KEY,...: a method scoring each episode as the weighted sum of its scores (repeat)")
    ap.add_argument("--save", default="", help="write the pooled figures and intervals here (JSON)")
    args = ap.parse_args(argv)

    sets = [load_set(s) for s in args.sets]
    seen: set = set()
    for s in sets:
        if seen & s["files"]:
            raise SystemExit(f"{s['spec']} repeats episodes of an earlier set: the sets must be disjoint")
        seen |= s["files"]
    if args.merge:
        merge_scores(sets, args.merge)
    for spec in args.combine:
        add_combination(sets, *parse_combination(spec))
    shared = set.intersection(*[set(s["episodes"][0]) for s in sets])
    known = [k for k in sets[0]["episodes"][0] if k in shared and isinstance(sets[0]["episodes"][0][k], float)
             and k not in ("noise", "env_return")]
    combined = [parse_combination(spec)[0] for spec in args.combine]
    methods = [m for m in args.methods.split(",") if m] or [k for k in known if k not in combined]
    methods += [c for c in combined if c not in methods]  # combinations are always reported
    missing = [m for m in methods + [args.baseline] if m not in shared]
    if missing:
        raise SystemExit(f"methods {missing} are not scored in every set (shared keys: {sorted(known)})")

    n_eps = sum(len(s["episodes"]) for s in sets)
    print(f"{len(sets)} evaluation sets, {n_eps} episodes: " + ", ".join(f"{s['spec']} ({len(s['episodes'])})" for s in sets))
    print(f"{'method':<40} {'ρ mean':>7} {'worst':>7} {'succ AUC':>9} {'exp/rnd':>8} {'held-out ρ':>11} {'held-out e/r':>13} "
          f"{'fwd>rev':>8} {'rnd>frozen':>11} {'rnd>hover':>10} (train / held-out)")
    report = {}
    for m in methods:
        tr, ho = pooled(sets, m, "train_tasks"), pooled(sets, m, "heldout_tasks")
        per_set = [set_summary(s["episodes"], m, s["train_tasks"])["spearman_noise_mean"] for s in sets]
        exploits = [len(exploit_tasks(s["episodes"], m, s["train_tasks"] + s["heldout_tasks"])) for s in sets]
        n_tasks = len(sets[0]["train_tasks"] + sets[0]["heldout_tasks"])
        per_task = {t: [score_task([e for e in s["episodes"] if e["task"] == t], m)["spearman_noise"] for s in sets]
                    for t in sets[0]["train_tasks"] + sets[0]["heldout_tasks"]}  # ρ(σ) per task, one per set
        report[m] = {"train_tasks": tr, "heldout_tasks": ho, "spearman_noise_mean_per_set": per_set,
                     "exploit_tasks_passed_per_set": exploits, "tasks": n_tasks, "spearman_noise_per_task": per_task}
        both = lambda k: f"{tr.get(k, np.nan):.2f}/{ho.get(k, np.nan):.2f}"
        print(f"{m:<40} {tr['spearman_noise_mean']:7.3f} {tr['spearman_noise_max']:7.3f} {tr['success_auc_mean']:9.3f} "
              f"{tr['expert_vs_random_auc_mean']:8.3f} {ho.get('spearman_noise_mean', np.nan):11.3f} "
              f"{ho.get('expert_vs_random_auc_mean', np.nan):13.3f} {both('forward_vs_reversed_auc_mean'):>8} "
              f"{both('random_vs_frozen_start_auc_mean'):>11} {both('random_vs_hover_auc_mean'):>10}"
              "   per set ρ " + " ".join(f"{r:.3f}" for r in per_set)
              + "  exploits below random (tasks) " + " ".join(f"{n}/{n_tasks}" for n in exploits))

    boot = {}
    if args.bootstrap > 0:
        rng = np.random.default_rng(args.seed)
        others = [m for m in methods if m != args.baseline]
        diffs = {m: {f"{w}/{x}": [] for w in ("train_tasks", "heldout_tasks") for x in METRICS} for m in others}
        for _ in range(args.bootstrap):
            sample = resample(sets, rng)
            base = {w: pooled(sample, args.baseline, w) for w in ("train_tasks", "heldout_tasks")}
            for m in others:
                for w in ("train_tasks", "heldout_tasks"):
                    cur = pooled(sample, m, w)
                    for x in METRICS:
                        if x in cur:
                            diffs[m][f"{w}/{x}"].append(cur[x] - base[w][x])
        print(f"\nmethod − {args.baseline} (95% paired bootstrap, {args.bootstrap} resamples; P(better))")
        for m in others:
            boot[m] = {}
            for name, d in diffs[m].items():
                d = np.asarray(d, np.float64)
                drawn = len(d)
                d = d[np.isfinite(d)]  # a resample can leave a metric undefined (one class only): said below
                if not len(d):
                    continue
                better = d < 0 if "spearman" in name else d > 0  # lower ρ(σ) is better, higher AUC is
                boot[m][name] = {"mean": float(d.mean()), "low": float(np.quantile(d, 0.025)),
                                 "high": float(np.quantile(d, 0.975)), "p_better": float(better.mean()),
                                 "n_defined": int(len(d)), "n_resamples": drawn}
                if len(d) < drawn:
                    print(f"  note: {m} {name}: defined in {len(d)} of {drawn} resamples (the interval is over those)")
            line = "  ".join(f"{n.split('/')[0][:5]}:{n.split('/')[1].replace('_mean', '')} "
                             f"{v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] {v['p_better']:.2f}"
                             for n, v in boot[m].items() if not n.endswith("spearman_noise_max"))
            print(f"{m}:\n  {line}")
    if args.save:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(args.save, json.dumps({"sets": [s["spec"] for s in sets], "merge": args.merge, "episodes": n_eps,
                                                 "baseline": args.baseline, "pooled": report,
                                                 "bootstrap_vs_baseline": boot}, indent=1) + "\n")
        print(f"json: {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
