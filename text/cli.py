"""`mmreward text …`: train | score | eval | merge | judge | train-genrm | train-gram | train-critic-rm | train-meta-rm. Each subcommand calls the Python API.

    mmreward text train --data train.jsonl --backbone path/or/hub-id --output-dir runs/rm --max-steps 500
    mmreward text score --model runs/rm --data inputs.jsonl [--json]
    torchrun --standalone --nproc_per_node 2 -m mmreward.cli text train ...   # DDP, unchanged

``train`` flags map one to one onto :class:`RewardTrainConfig` fields (``--max-steps`` →
``max_steps``; booleans as ``--progress`` / ``--no-progress``; ``none`` for optional numbers). The
trained model is saved in ``from_pretrained`` form into ``--output-dir`` (next to ``metrics.csv``,
``curves.png`` and the resumable ``checkpoint-*`` snapshot).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args

from .train import RewardTrainConfig


# ------------------------------------------------------------------ train
def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    p = CLIParser(prog="mmreward text train", description="train a scalar reward model on preference pairs")
    p.add_argument("--data", required=True, help="training pairs: .json / .jsonl / saved datasets folder (TRL preference format)")
    p.add_argument("--eval-data", help="held-out pairs: accuracy every --eval-every steps and at the end")
    p.add_argument("--split", help="split of a saved DatasetDict for --data / --eval-data")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--backbone", help="transformers backbone: local path or hub id (pretrained weights, new head)")
    src.add_argument("--backbone-config", help="transformers config JSON (with model_type): random init, needs --tokenizer")
    src.add_argument("--init", help="reward-model folder to continue from (ours or a 1-label sequence classifier)")
    p.add_argument("--tokenizer", help="tokenizer path / hub id (default: the backbone's / init folder's)")
    add_config_options(p, RewardTrainConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(RewardTrainConfig, args)

    from .data import load_preference_pairs
    from .reward_model import RewardModel
    from .train import train_reward_model

    train = load_preference_pairs(args.data, split=args.split)
    evals = load_preference_pairs(args.eval_data, split=args.split) if args.eval_data else None
    if args.init:
        model = RewardModel.from_pretrained(args.init, tokenizer=_tokenizer(args.tokenizer)).train()
    elif args.backbone:
        model = RewardModel.from_backbone(args.backbone, tokenizer=args.tokenizer)
    else:
        if not args.tokenizer:
            p.error("--backbone-config needs --tokenizer")
        model = RewardModel.from_backbone(_config_from_json(args.backbone_config), tokenizer=args.tokenizer)
    history = train_reward_model(model, train, evals, cfg)
    if _is_main_process():
        model.save_pretrained(cfg.output_dir)
        last = history[-1] if history else {}
        summary = {k: last[k] for k in ("step", "loss", "accuracy", "eval_accuracy") if k in last}
        print(f"saved reward model to {cfg.output_dir}: {json.dumps(summary)}")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _tokenizer(path: Optional[str]) -> Any:
    if path is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _config_from_json(path: str) -> Any:
    from transformers import AutoConfig

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(f"{path}: a backbone config needs a 'model_type' field (e.g. \"bert\", \"llama\")")
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


# ------------------------------------------------------------------ score
def _score_items(rows: list[dict]) -> tuple[list, list, list[tuple[int, str]]]:
    """Flatten rows into (prompts, responses, [(row, slot)]); slot: response | chosen | rejected."""
    from mmreward.core.data import DataError

    from .data import check_text

    prompts, responses, where = [], [], []
    for i, r in enumerate(rows):
        prompt = r.get("prompt")
        if prompt is not None:
            prompt = check_text(prompt, f"row {i}: field 'prompt'", allow_empty=True)
        if "chosen" in r or "rejected" in r:
            slots = ("chosen", "rejected")
        elif "response" in r:
            slots = ("response",)
        elif "messages" in r or "text" in r:
            slots, prompt = ("messages" if "messages" in r else "text",), None
        else:
            raise DataError(f"row {i}: needs 'response' (with 'prompt'), 'chosen' + 'rejected', 'messages' or 'text'")
        for s in slots:
            if r.get(s) is None:
                raise DataError(f"row {i}: missing field {s!r}")
            prompts.append(prompt)
            responses.append(check_text(r[s], f"row {i}: field {s!r}"))
            where.append((i, s))
    return prompts, responses, where


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    p = CLIParser(prog="mmreward text score", description="score prompt / response pairs with a reward model")
    p.add_argument("--model", required=True, help="reward-model folder (save_pretrained output or a 1-label classifier)")
    p.add_argument("--data", required=True, help=".json / .jsonl rows: prompt + response | prompt + chosen + rejected | "
                                                 "messages | text")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="max tokens per input (longer ones lose their start)")
    p.add_argument("--bf16", action="store_true", help="run the backbone under bf16 autocast")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the rows with their scores as JSON lines")
    args = p.parse_args(argv)

    import torch

    from mmreward.core.data import read_records

    from .reward_model import RewardModel

    rows = read_records(args.data)
    if not rows:
        raise ValueError(f"{args.data} holds no rows")
    prompts, responses, where = _score_items(rows)
    model = RewardModel.from_pretrained(args.model, device=args.device)
    scores = model.score(prompts, responses, batch_size=args.batch_size, max_length=args.max_length,
                         dtype=torch.bfloat16 if args.bf16 else None).tolist()
    out = [dict() for _ in rows]
    for (i, slot), s in zip(where, scores):
        out[i]["score" if slot in ("response", "messages", "text") else f"score_{slot}"] = s
    n_pairs = sum(1 for o in out if "score_chosen" in o)
    correct = sum(1 for o in out if "score_chosen" in o and o["score_chosen"] > o["score_rejected"])
    if args.json:
        for r, o in zip(rows, out):
            print(json.dumps({**r, **o}, ensure_ascii=False))
    else:
        print(f"{'row':>5}  {'score':>10}  {'rejected':>10}  prompt")
        for i, (r, o) in enumerate(zip(rows, out)):
            prompt = r.get("prompt", r.get("messages", r.get("text", "")))
            prompt = (prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)).replace("\n", " ")
            first = o.get("score", o.get("score_chosen"))
            second = f"{o['score_rejected']:10.4f}" if "score_rejected" in o else " " * 10
            print(f"{i:>5}  {first:10.4f}  {second}  {prompt[:60]}")
        if n_pairs:
            print(f"pairwise accuracy: {correct / n_pairs:.4f} over {n_pairs} pairs")
    return 0


# ------------------------------------------------------------------ dispatch
def _delegate(module: str, func: str, argv: Sequence[str], what: str) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            print(f"mmreward text {what}: {module} is not available in this install ({e})", file=sys.stderr)
            return 2
        raise
    if not hasattr(mod, func):
        print(f"mmreward text {what}: {module} has no {func}()", file=sys.stderr)
        return 2
    return int(getattr(mod, func)(list(argv)) or 0)


COMMANDS = {
    "train": ("train a scalar reward model (BT / margin / label smoothing / ties)", None),
    "score": ("score prompt / response rows with a reward model", None),
    "eval": ("RewardBench / RM-Bench / bias-probe evaluation", ("mmreward.text.eval.cli", "main")),
    "merge": ("WARM: average reward models fine-tuned from one init", ("mmreward.text.recipes.cli", "merge_main")),
    "judge": ("generative judges (GenRM, GRAM, RM-R1, DeepSeek-GRM, RewardAnything, Critic-RM)",
              ("mmreward.text.generative.cli", "main")),
    "train-genrm": ("fine-tune a causal LM as a GenRM verifier", ("mmreward.text.generative.cli", "train_genrm_main")),
    "train-gram": ("GRAM: pair SFT (stage 1) / A-B judge (stage 2)", ("mmreward.text.generative.cli", "train_gram_main")),
    "train-critic-rm": ("Critic-RM: self-critiques + joint critique / reward training",
                        ("mmreward.text.generative.cli", "train_critic_rm_main")),
    "train-meta-rm": ("DeepSeek-GRM meta-RM: which sampled judgements to trust",
                      ("mmreward.text.generative.cli", "train_meta_rm_main")),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmreward text <command> [options]\n\ncommands:")
        for name, (help_text, _) in COMMANDS.items():
            print(f"  {name:<16} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "train":
        return train_main(rest)
    if name == "score":
        return score_main(rest)
    if name in COMMANDS:
        module, func = COMMANDS[name][1]
        return _delegate(module, func, rest, name)
    print(f"mmreward text: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
