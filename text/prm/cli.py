"""``mmreward prm …``: train, score, search and evaluate process reward models.

    mmreward prm train --data steps.jsonl --backbone path/to/causal-lm --head lm --output-dir runs/prm \\
        --max-steps 2000 --lr 1e-5                      # model saved to runs/prm/model
    mmreward prm train --synthetic 3000 --backbone tiny --output-dir runs/prm-tiny --lr 3e-3 --max-steps 600
    mmreward prm score --model runs/prm/model --data steps.jsonl --out scores.jsonl --reduce min
    mmreward prm score --model runs/prm/model --problem "3 +4 -2" --step 3+4=7 --step 7-2=5
    mmreward prm eval --model runs/prm/model --data heldout.jsonl --threshold 0.5 --sweep
    mmreward prm search --model runs/prm-tiny/model --synthetic 100 --policy-error-rate 0.3 \\
        --budget-steps 16 --method both --export runs/selftrain.jsonl

Training options come from :class:`~mmreward.text.prm.train.PRMTrainConfig` (and
:class:`~mmreward.text.prm.model.PRMConfig` for the head), search options from
:class:`~mmreward.text.prm.search.MCTSConfig`; each command calls the Python API a user would.
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import MISSING, fields
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser

MODEL_OPTIONS = ("head", "step_tag", "step_separator", "good_token", "bad_token", "score", "max_length")


def _add_dataclass(parser: argparse.ArgumentParser, cls, only: Optional[Sequence[str]] = None) -> None:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        default = f.default if f.default is not MISSING else None
        t = hints[f.name]
        t = next((a for a in typing.get_args(t) if a is not type(None)), t)  # Optional[X] -> X
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=t, default=default, help=f"{help_text} (default: {default!r})")


def _pick(args: argparse.Namespace, cls, only: Optional[Sequence[str]] = None) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(cls) if (only is None or f.name in only)}


def _load_model(path: str):
    from .model import ProcessRewardModel

    return ProcessRewardModel.from_pretrained(path)


def _build_model(args: argparse.Namespace):
    """A fresh PRM: ``--backbone tiny`` (synthetic-task tokenizer + tiny Llama) or an HF model folder."""
    from .model import PRMConfig, ProcessRewardModel

    cfg = _pick(args, PRMConfig, MODEL_OPTIONS)
    if args.backbone == "tiny":
        from .synthetic import char_tokenizer, tiny_llama

        tok = char_tokenizer(args.tiny_tokenizer, max_value=args.max_value)
        return ProcessRewardModel.from_backbone(tiny_llama(tok, seed=args.seed), tok, **cfg)
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.backbone)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    loader = AutoModelForCausalLM if cfg["head"] == "lm" else AutoModel
    return ProcessRewardModel.from_backbone(loader.from_pretrained(args.backbone), tok, **cfg)


def _examples(args: argparse.Namespace, path: Optional[str], synthetic: int, seed: int):
    from .data import read_step_examples

    if path:
        return read_step_examples(path, format=args.format)
    if synthetic:
        from .synthetic import make_dataset

        return read_step_examples(make_dataset(synthetic, seed=seed, num_steps=args.num_steps, max_value=args.max_value))
    return None


def _train(args: argparse.Namespace) -> int:
    import os

    from .data import read_pair_examples
    from .train import PRMTrainConfig, evaluate_prm, train_prm

    config = PRMTrainConfig(**_pick(args, PRMTrainConfig))
    model = _build_model(args)
    if config.objective == "ppm":
        if not args.data:
            raise SystemExit("mmreward prm train: --objective ppm needs --data with PPM pairs")
        train, evals = read_pair_examples(args.data), (read_pair_examples(args.eval_data) if args.eval_data else None)
    else:
        train = _examples(args, args.data, args.synthetic, args.seed + 1)
        if train is None:
            raise SystemExit("mmreward prm train: pass --data FILE or --synthetic N")
        evals = _examples(args, args.eval_data, args.synthetic // 10 if args.synthetic else 0, args.seed + 2)
    history = train_prm(model, train, config, eval_examples=evals)
    out = os.path.join(config.output_dir, "model")
    model.save_pretrained(out)
    last = {k: v for k, v in history[-1].items()} if history else {}
    if evals and config.objective != "ppm":
        last.update({f"final_{k}": v for k, v in evaluate_prm(model, evals, config.eval_threshold, sweep=True).items()})
    print(json.dumps({"model": out, **last}, indent=2))
    return 0


def _score(args: argparse.Namespace) -> int:
    from .data import read_step_examples

    model = _load_model(args.model)
    if args.data:
        rows = read_step_examples(args.data, format=args.format)
        problems, steps = [r.problem for r in rows], [r.steps for r in rows]
    elif args.problem is not None and args.step:
        problems, steps = [args.problem], [args.step]
    else:
        raise SystemExit("mmreward prm score: pass --data FILE or --problem TEXT with one --step per step")
    scores = model.score_batch(problems, steps)
    import torch

    from mmreward.ops import segment_reduce

    agg = segment_reduce(torch.cat(scores), torch.tensor([s.numel() for s in scores]), reduce=args.reduce)
    lines = [json.dumps({"step_scores": [round(float(x), 6) for x in s], args.reduce: round(float(a), 6)})
             for s, a in zip(scores, agg)]
    if args.out:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} rows to {args.out}")
    else:
        print("\n".join(lines))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .data import read_step_examples
    from .train import evaluate_prm

    model = _load_model(args.model)
    rows = read_step_examples(args.data, format=args.format)
    print(json.dumps(evaluate_prm(model, rows, args.threshold, sweep=args.sweep), indent=2))
    return 0


def _search(args: argparse.Namespace) -> int:
    from .search import MCTSConfig, compare_search

    model = _load_model(args.model)
    cfg = MCTSConfig(**_pick(args, MCTSConfig))
    out = compare_search(model, n_problems=args.synthetic, num_steps=args.num_steps, error_rate=args.policy_error_rate,
                         config=cfg, method=args.method, seed=args.seed, export=args.export, max_value=args.max_value)
    print(json.dumps(out, indent=2))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .model import PRMConfig
    from .search import MCTSConfig
    from .train import PRMTrainConfig

    parser = CLIParser(prog="mmreward prm", description="process reward models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a PRM (bce / mse / ppm) and save it to OUTPUT_DIR/model")
    p.add_argument("--data", help="training data (.json / .jsonl / saved dataset): TRL, Math-Shepherd, PRM800K or PPM pairs")
    p.add_argument("--eval-data", help="held-out data, same formats")
    p.add_argument("--format", default="auto", choices=("auto", "trl", "math_shepherd", "prm800k"))
    p.add_argument("--synthetic", type=int, default=0, help="instead of --data: N synthetic arithmetic chains")
    p.add_argument("--num-steps", type=int, default=4, help="steps per synthetic chain")
    p.add_argument("--max-value", type=int, default=9, help="synthetic chains' values stay in 0..MAX_VALUE")
    p.add_argument("--backbone", default="tiny", help="'tiny' (synthetic-task tiny Llama) or an HF model folder")
    p.add_argument("--tiny-tokenizer", default="term", choices=("char", "term", "step"),
                   help="tokenizer of the tiny backbone (see synthetic.char_tokenizer)")
    _add_dataclass(p, PRMConfig, MODEL_OPTIONS)
    _add_dataclass(p, PRMTrainConfig)
    p.set_defaults(fn=_train)

    p = sub.add_parser("score", help="per-step scores of solutions")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="stepwise data file")
    p.add_argument("--format", default="auto", choices=("auto", "trl", "math_shepherd", "prm800k"))
    p.add_argument("--problem")
    p.add_argument("--step", action="append", help="one step (repeat in order)")
    p.add_argument("--reduce", default="min", choices=("min", "prod", "last", "mean"))
    p.add_argument("--out", help="write JSONL here instead of stdout")
    p.set_defaults(fn=_score)

    p = sub.add_parser("eval", help="ProcessBench F1 and step macro-F1 on labelled data")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--format", default="auto", choices=("auto", "trl", "math_shepherd", "prm800k"))
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=False, help="also report the best threshold")
    p.set_defaults(fn=_eval)

    p = sub.add_parser("search", help="PRM-guided MCTS vs Best-of-N on synthetic problems with a noisy policy")
    p.add_argument("--model", required=True)
    p.add_argument("--synthetic", type=int, default=100, help="number of held-out synthetic problems")
    p.add_argument("--num-steps", type=int, default=4)
    p.add_argument("--max-value", type=int, default=9, help="problems' values stay in 0..MAX_VALUE")
    p.add_argument("--policy-error-rate", type=float, default=0.3)
    p.add_argument("--method", default="both", choices=("mcts", "best-of-n", "both"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", help="write MCTS self-training data (value-target traces + PPM pairs) as JSONL")
    _add_dataclass(p, MCTSConfig)
    p.set_defaults(fn=_search)

    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"mmreward prm {args.command}: error: {e}", file=sys.stderr)
        return 2
