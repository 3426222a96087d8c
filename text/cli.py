"""`mmreward text …`: train | score | eval | merge | judge | train-genrm | train-gram | train-critic-rm | train-meta-rm. Each subcommand calls the Python API.

    mmreward text train --model path/to/backbone --data train.jsonl --out runs/rm --epochs 1
    mmreward text score --model runs/rm --data inputs.jsonl [--json]
    torchrun --standalone --nproc_per_node 2 -m mmreward.cli text train ...   # DDP, unchanged

``train`` flags map one to one onto :class:`RewardTrainConfig` fields (``--max-steps`` →
``max_steps``; booleans as ``--progress`` / ``--no-progress``; ``none`` for optional numbers;
``output_dir`` is ``--out``). The trained model is saved in ``from_pretrained`` form into
``<out>/model/``, next to ``metrics.csv``, ``curves.png`` and the resumable snapshots.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import (CLIParser, add_config_options, add_split_options, check_output_folder,
                                      check_split_sources, config_from_args, error_at_row, json_text,
                                      print_training_summary, run_cli)

from .data import INPUT_FORMATS, TRUNCATIONS
from .reward_model import POOLINGS, RewardModelConfig
from .train import LOSSES, RewardTrainConfig

_NEW_HEAD = ("pooling", "input_format", "truncation", "prompt_share")


def _help(name: str) -> str:
    return RewardModelConfig.__dataclass_fields__[name].metadata["help"]


# ------------------------------------------------------------------ train
def _train_parser() -> CLIParser:
    p = CLIParser(prog="mmreward text train", description="train a scalar reward model on preference pairs")
    p.add_argument("--data", required=True, help="training pairs: .json / .jsonl / .csv / .parquet / dataset folder / hub dataset id (TRL preference format)")
    p.add_argument("--eval-data", help="held-out pairs: accuracy every --eval-every steps and at the end")
    add_split_options(p, "--data", "--eval-data")
    p.add_argument("--model", help="where training starts: a reward-model folder (continue training it) or a "
                                   "transformers backbone, local path or hub id (pretrained weights, new head)")
    for old in ("--backbone", "--init"):  # earlier spellings of --model
        p.add_argument(old, dest="model", help=argparse.SUPPRESS)
    p.add_argument("--backbone-config", help="transformers config JSON (with model_type): random init, needs --tokenizer")
    p.add_argument("--tokenizer", help="tokenizer folder / hub id (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    head = p.add_argument_group("new head (a backbone --model or --backbone-config)")
    head.add_argument("--pooling", choices=POOLINGS, help=_help("pooling") + " (default: last for decoders, mean for encoders)")
    head.add_argument("--input-format", choices=INPUT_FORMATS, help=_help("input_format") + " (default: chat with a chat "
                      "template, pair for encoders, else joined)")
    head.add_argument("--truncation", choices=TRUNCATIONS, help=_help("truncation") + " (default: prompt_first)")
    head.add_argument("--prompt-share", type=float, help=_help("prompt_share") + " (default: 0.25)")
    add_config_options(p, RewardTrainConfig, choices={"loss": LOSSES})  # --help lists them; a typo names --loss
    return p


def _start_model(args: argparse.Namespace) -> Any:
    """A fresh head on a backbone, or a reward model to continue training."""
    from mmreward.registry import LoadError, detect, resolve_folder

    from .reward_model import RewardModel, load_tokenizer

    new_head = {k: getattr(args, k) for k in _NEW_HEAD if getattr(args, k) is not None}
    if args.backbone_config:
        config = _config_from_json(args.backbone_config)
        from mmreward.core.folders import CheckpointError

        try:
            return RewardModel.from_backbone(config, tokenizer=args.tokenizer, **new_head)
        except (ValueError, TypeError, OSError, CheckpointError):  # their own messages (a --tokenizer folder's too)
            raise
        except Exception as e:  # noqa: BLE001 - a size torch cannot build (-32: "negative dimension") was exit 1
            from mmreward.core.data import DataError

            raise DataError(f"--backbone-config {args.backbone_config}: cannot build a {config.model_type} backbone "
                            f"from it: {e}") from e
    folder = resolve_folder(args.model)
    try:
        detect(folder)
    except LoadError:  # not a reward model: a backbone
        if os.path.isfile(os.path.join(folder, "train_config.json")) and not os.path.exists(os.path.join(folder, "model")):
            # a run killed before its end: transformers would say "Unrecognized model ... model_type"
            raise ValueError(f"--model {args.model} is a training run folder without a final model/ (the run did not "
                             f"finish): continue it with `--out {args.model}` and its own settings, or pass a "
                             "reward-model or backbone folder") from None
        from mmreward.registry import not_a_model_folder

        problem = not_a_model_folder(folder)  # a snapshot: not a backbone without config.json
        if problem is not None:
            raise ValueError(f"--model {problem}") from None
        return RewardModel.from_backbone(folder, tokenizer=args.tokenizer, **new_head)
    if new_head:
        flags = ", ".join("--" + k.replace("_", "-") for k in new_head)
        raise ValueError(f"{flags} set up a new head, but {args.model} is a reward model that has its own")
    return RewardModel.from_pretrained(folder, tokenizer=load_tokenizer(args.tokenizer) if args.tokenizer else None)


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    p = _train_parser()
    args = p.parse_args(argv)
    if bool(args.model) == bool(args.backbone_config):
        p.error("give one of --model (a reward model or a backbone) and --backbone-config")
    if args.backbone_config and not args.tokenizer:
        p.error("--backbone-config needs --tokenizer")
    cfg = config_from_args(RewardTrainConfig, args)

    from mmreward.core.device import resolve_device
    from mmreward.core.train import end_distributed, is_main_process, seed_everything

    from .data import load_preference_pairs
    from .train import evaluate_pairs, reward_trainer

    check_split_sources(args, "--eval-data")
    device = resolve_device(args.device)
    check_output_folder(cfg.output_dir, "--out", [("--model", args.model)])
    train = load_preference_pairs(args.data, split=args.split)
    evals = load_preference_pairs(args.eval_data, split=args.eval_split) if args.eval_data else None
    seed_everything(cfg.seed)  # before the new head is drawn: equal seeds give equal runs
    model = _start_model(args).to(device)
    # every refusal (bad pairs, a folder whose run cannot be continued) comes before the held-out
    # evaluation; a resumed run has no "before" (this fresh model's figures would not be the run's)
    trainer = reward_trainer(model, train, evals, cfg)
    resumed = trainer.start()
    before = evaluate_pairs(model, evals, batch_size=cfg.eval_batch_size) if evals and not resumed else None
    history = trainer.fit()  # the Trainer saves the model into <out>/model/
    if is_main_process():
        print_training_summary(history, before if before is not None or not evals else {},
                               os.path.join(cfg.output_dir, "model"))
    end_distributed()
    return 0


def _config_from_json(path: str) -> Any:
    from transformers import AutoConfig

    from mmreward.core.data import DataError

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the backbone config {path}: {e}") from e
    if not isinstance(data, dict) or "model_type" not in data:
        raise DataError(f"{path}: a backbone config needs a 'model_type' field (e.g. \"bert\", \"llama\")")
    model_type = data.pop("model_type")
    import difflib
    import warnings

    try:
        defaults = AutoConfig.for_model(model_type)
    except (ValueError, KeyError, TypeError):  # transformers' message lists every model type (thousands of characters)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        near = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=3)
        raise DataError(f"{path}: model_type {model_type!r} is not a transformers model type"
                        + (f" (did you mean {' / '.join(map(repr, near))}?)" if near else "")) from None
    # a key the config class does not know is kept as a plain attribute that no model reads: a misspelt
    # "hiden_size" left hidden_size at its default, silently (a warning, not an error: published config.json
    # files carry keys of older releases)
    known = set(defaults.to_dict()) | set(vars(defaults)) | set(getattr(defaults, "attribute_map", {}))
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = [f"{k!r}" + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(k, known, n=1, cutoff=0.8))
                 for k in unknown]
        warnings.warn(f"{path}: {', '.join(hints)} {'is not a field' if len(unknown) == 1 else 'are not fields'} of "
                      f"{type(defaults).__name__}; no model reads {'it' if len(unknown) == 1 else 'them'}", stacklevel=2)
    try:
        return AutoConfig.for_model(model_type, **data)
    except Exception as e:  # noqa: BLE001 - a wrong type ("hidden_size": "32") is huggingface_hub's
        # StrictDataclassFieldValidationError, neither a ValueError nor a TypeError: it was an "unexpected error"
        raise DataError(f"{path}: {e}") from None


# ------------------------------------------------------------------ score
def score_items(rows: list[dict], source: str) -> tuple[list, list[tuple[int, str]]]:
    """TextPairs of the rows and, per input, ``(row, slot)``; slot: response | chosen | rejected.
    A row with ``chosen`` and ``rejected`` is scored twice (with its ``prompt``)."""
    from mmreward.core.data import row_origin
    from mmreward.core.inputs import TextPair

    from .data import is_preference_row, preference_inputs

    items, where = [], []
    for i, r in enumerate(rows):
        file, row = row_origin(rows, i) or (source, i)  # a folder of shards: the shard and its row
        at = f"{file}: row {row}"
        if is_preference_row(r):
            # read as training reads the row: its system turn, a prompt under another name, HelpSteer's layout
            items.extend(preference_inputs(r, row, file))
            where.extend([(i, "chosen"), (i, "rejected")])
        else:
            items.append(TextPair.from_record(r, at))
            where.append((i, "response"))
    return items, where


def _score_parser() -> CLIParser:
    p = CLIParser(prog="mmreward text score", description="score prompt / response pairs with a text reward model")
    p.add_argument("--model", required=True, help="reward-model folder: saved by mmreward, a run folder, a 1-label "
                                                  "transformers sequence classifier, or a text judge")
    p.add_argument("--data", required=True, help=".json / .jsonl / .csv / .parquet / dataset rows: prompt + response | prompt + chosen + rejected | "
                                                 "messages | text")
    add_split_options(p, "--data")
    p.add_argument("--batch-size", type=int, default=16, help="inputs per forward (default: 16)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the model's own)")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16: cast the model (default: as saved)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--json", action="store_true", help="print the rows with their scores as JSON lines")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    return p


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    args = _score_parser().parse_args(argv)

    import mmreward
    from mmreward.core.data import read_records
    from mmreward.core.device import resolve_device, resolve_dtype
    from mmreward.core.inputs import TextPair

    from .reward_model import RewardModel

    # before the rows are read and the model loads (minutes for a 7B model), not after
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise ValueError(f"--max-length {args.max_length}: max_length must be an integer >= 2 or None, got "
                         f"{args.max_length} (leave it out for the model's own)")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if args.split:  # a split may also be the rows' own field 'split' (HelpSteer2), as training reads it
        from .data import _read_pair_rows

        rows = _read_pair_rows(args.data, args.split, f"{args.data}: ")
    else:
        rows = read_records(args.data)
    if not rows:
        raise ValueError(f"{args.data} holds no rows" + (f" in split {args.split!r}" if args.split else ""))
    items, where = score_items(rows, args.data)
    model = mmreward.load(args.model, device=device, dtype=dtype)
    if TextPair not in tuple(getattr(model, "input_types", ())):
        raise ValueError(f"{args.model} holds a {type(model).__name__}, which does not score prompt / response "
                         "pairs: use `mmreward score`")
    kw = {}
    if isinstance(model, RewardModel):
        kw["progress"] = args.progress
        if args.max_length is not None:  # replace() runs the config's own check (an integer >= 2)
            model.config = dataclasses.replace(model.config, max_length=args.max_length)
    elif args.max_length is not None:
        raise ValueError(f"--max-length applies to scalar reward models, not to a {type(model).__name__}")
    try:
        scores = model.score(items, batch_size=args.batch_size, **kw).tolist()
    except ValueError as e:  # DataError included: "input K" is the K-th scored text, name the file's row
        from mmreward.core.data import row_origin

        def at(i: int) -> str:
            file, row = row_origin(rows, i) or (args.data, i)
            return f"{file}: row {row}"
        raise error_at_row(e, where, at, "response") from None
    _print_scores(rows, where, scores, args.json)
    return 0


def _print_scores(rows: list[dict], where: list[tuple[int, str]], scores: list[float], as_json: bool) -> None:
    out = [dict() for _ in rows]
    for (i, slot), s in zip(where, scores):
        out[i]["score" if slot == "response" else f"score_{slot}"] = s
    if as_json:
        for r, o in zip(rows, out):
            # default=str: a parquet row's bytes / timestamp / decimal columns (no JSON type) are written as text,
            # as `mmreward score` writes them, not a TypeError after every row was scored
            print(json_text({**r, **o}, ensure_ascii=False, default=str))
        return
    print(f"{'row':>5}  {'score':>10}  {'rejected':>10}  prompt")
    for i, (r, o) in enumerate(zip(rows, out)):
        prompt = r.get("prompt", r.get("messages", r.get("text", "")))
        prompt = (prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)).replace("\n", " ")
        first = o.get("score", o.get("score_chosen"))
        second = f"{o['score_rejected']:10.4f}" if "score_rejected" in o else " " * 10
        print(f"{i:>5}  {first:10.4f}  {second}  {prompt[:60]}")
    line = pairwise_accuracy_line([o for o in out if "score_chosen" in o])
    if line:
        print(line)


def pairwise_accuracy_line(pairs: list[dict]) -> Optional[str]:
    """``pairwise accuracy: A over N pairs`` of rows with ``score_chosen`` / ``score_rejected``; a pair with a
    NaN / inf score (a model overflowing in fp16) is left out and counted, not read as a wrong pair."""
    import math

    finite = [o for o in pairs if math.isfinite(o["score_chosen"]) and math.isfinite(o["score_rejected"])]
    dropped = len(pairs) - len(finite)
    note = f" ({dropped} pair{'s' if dropped > 1 else ''} with a non-finite score left out)" if dropped else ""
    if not pairs:
        return None
    if not finite:
        return f"pairwise accuracy: undefined: every one of the {len(pairs)} pairs has a non-finite score"
    correct = sum(1 for o in finite if o["score_chosen"] > o["score_rejected"])
    return f"pairwise accuracy: {correct / len(finite):.4f} over {len(finite)} pairs{note}"


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
    from mmreward.core.cli_config import entering_subcommand

    entering_subcommand(what)
    return int(getattr(mod, func)(list(argv)) or 0)


COMMANDS = {
    "train": ("train a scalar reward model (BT / margin / label smoothing / ties)", ("mmreward.text.cli", "train_main")),
    "score": ("score prompt / response rows with a reward model", ("mmreward.text.cli", "score_main")),
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
    """``mmreward text <command>``; errors propagate to the caller (``mmreward`` wraps this in ``run_cli``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmreward text <command> [options]\n\ncommands:")
        for name, (help_text, _) in COMMANDS.items():
            print(f"  {name:<16} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mmreward text: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][1]
    return _delegate(module, func, rest, name)


if __name__ == "__main__":
    sys.exit(run_cli("mmreward text", main, sys.argv[1:]))
