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
                                      check_split_sources, config_from_args, error_at_row, output_path,
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


class _Chunk(list):
    """Rows ``start ..`` of a file (or of a folder's shards, ``files`` as :class:`~mmreward.core.data.FileRows`
    records them), so that :func:`~mmreward.core.data.row_origin` names a chunk's row by its file and its row there,
    not by its place in the chunk."""

    def __init__(self, rows: list, start: int, source: str, files: Optional[list]) -> None:
        super().__init__(rows)
        # row_origin reads `files` only when there are several: one file is listed with an end that no row reaches
        self.files = [(first - start, path) for first, path in (files or [(0, source)])] + [(sys.maxsize, source)]


def _score_parser() -> CLIParser:
    p = CLIParser(prog="mmreward text score", description="score prompt / response pairs with a text reward model")
    p.add_argument("--model", required=True, help="reward-model folder: saved by mmreward, a run folder, a 1-label "
                                                  "transformers sequence classifier, or a text judge")
    p.add_argument("--data", required=True, help=".json / .jsonl / .csv / .parquet / dataset rows: prompt + response | prompt + chosen + rejected | "
                                                 "messages | text; - reads JSON lines from stdin")
    add_split_options(p, "--data")
    p.add_argument("--batch-size", type=int, default=None,
                   help="inputs per forward (default: the model's own: 16, a generative judge's saved batch_size)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the model's own)")
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16: cast the model (default: as saved)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--json", action="store_true", help="print the rows with their scores as JSON lines")
    p.add_argument("--out", type=output_path, help="write the JSON lines (--json's output) to this file instead of "
                                                   "printing them (.gz: gzipped; - : stdout); the file appears whole "
                                                   "when scoring ends")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows scored so far in OUT.partial, and continue the scoring a run that stopped left "
                        "there (needs --out)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    return p


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    """Rows are read, checked (every row, before any is scored), scored and written a chunk at a time with the
    helpers of ``mmreward score`` (:mod:`mmreward.score_cli`): memory holds a chunk, not the file."""
    p = _score_parser()
    args = p.parse_args(argv)

    import itertools
    import time

    import mmreward
    from mmreward import score_cli
    from mmreward.core.data import iter_records, jsonl_rows, read_records, streams
    from mmreward.core.device import resolve_device, resolve_dtype
    from mmreward.core.inputs import TextPair

    from .reward_model import RewardModel

    # before the rows are read and the model loads (minutes for a 7B model), not after
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise ValueError(f"--max-length {args.max_length}: max_length must be an integer >= 2 or None, got "
                         f"{args.max_length} (leave it out for the model's own)")
    if args.split and args.data == "-":
        p.error("--split chooses a split of a data source that has several; JSON lines on stdin have none")
    if args.resume and (not args.out or args.out == "-"):
        p.error("--resume continues a file of scored rows: it needs an --out file")
    if args.out == "-":  # the usual name of stdout: what --json prints
        args.out, args.json = None, True
    if args.out:
        args.out = os.path.expanduser(args.out)
        kind = score_cli._other_format(args.out)
        if kind:  # JSON lines under a .parquet / .csv name: a reader of that format fails on it, or misreads it
            p.error(f"--out {args.out!r} names a {kind} file, but --out writes JSON lines (--json's output): name it "
                    f".jsonl (or .jsonl.gz, gzipped) and convert it if you need {kind}")
    from mmreward.core.cli_config import check_output_file

    args.data = os.path.expanduser(args.data)
    check_output_file(args.out, "--out", [("--data", None if args.data == "-" else args.data)],
                      folders=[("--model", args.model)])
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    name = "<stdin>" if args.data == "-" else args.data
    source: Optional[list] = None  # the rows in memory; None: read again from --data at each pass
    if args.data == "-":  # read once, so held in memory
        source = list(jsonl_rows(sys.stdin.buffer, name))
    elif args.split:  # a split may also be the rows' own field 'split' (HelpSteer2), as training reads it
        from .data import _read_pair_rows

        source = _read_pair_rows(args.data, args.split, f"{args.data}: ")
    elif not streams(args.data):
        source = read_records(args.data)
    size = score_cli.CHUNK_ROWS  # rows per chunk; whole batches of the model's once it has loaded

    def chunks() -> Any:
        rows = iter(source) if source is not None else iter_records(args.data)
        for start in itertools.count(0, size):
            chunk = list(itertools.islice(rows, size))
            if not chunk:
                return
            files = getattr(source if source is not None else rows, "files", None)  # a folder's shards
            yield start, _Chunk(chunk, start, name, files)

    def row_name(chunk: _Chunk, j: int) -> str:
        from mmreward.core.data import row_origin

        return "{}: row {}".format(*row_origin(chunk, j))

    # every row is read as the model will get it before the model loads (a bad row costs nothing) ...
    n_rows = n_inputs = 0
    for start, chunk in chunks():
        n_inputs += len(score_items(chunk, name)[0])
        n_rows += len(chunk)
    if not n_rows:
        raise ValueError(f"{args.data} holds no rows" + (f" in split {args.split!r}" if args.split else ""))
    model = mmreward.load(args.model, device=device, dtype=dtype)
    if TextPair not in tuple(getattr(model, "input_types", ())):
        raise ValueError(f"{args.model} holds a {type(model).__name__}, which does not score prompt / response "
                         "pairs: use `mmreward score`")
    if isinstance(model, RewardModel):
        if args.max_length is not None:  # replace() runs the config's own check (an integer >= 2)
            model.config = dataclasses.replace(model.config, max_length=args.max_length)
    elif args.max_length is not None:
        raise ValueError(f"--max-length applies to scalar reward models, not to a {type(model).__name__}")
    batch = args.batch_size or getattr(model, "default_batch_size", None) or 16
    size = -(-score_cli.CHUNK_ROWS // batch) * batch  # whole batches per chunk
    # ... and checked against it (fits max_length, a chat template takes it) before any is scored: a bad row
    # 37,123 is named before hours of scoring, not after. A model that checks nothing ahead (a judge) is spared
    # reading the file once more for it
    if score_cli._prechecks(model):
        for start, chunk in chunks():
            items, where = score_items(chunk, name)
            try:
                score_cli._precheck(model, items)
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise error_at_row(e, where, lambda j: row_name(chunk, j), "response") from None

    began, pairs, done_inputs = time.monotonic(), [], [0]

    def score_all(write: Any, done: int = 0, kept: Any = None) -> None:
        """Score every row from row ``done`` on (``kept(start, rows)``: the rows before it, scored by an earlier
        run, checked) and ``write(start, rows, scores)`` a chunk at a time, in the file's order."""
        import torch

        # each chunk's warnings are told once at the end, a truncation count summed over the whole file
        with score_cli.scoring(n_inputs, args.progress) as (bar, _):
            for start, chunk in chunks():
                if start < done:
                    n = kept(start, chunk[:done - start])
                    if bar is not None:
                        bar.update(n)
                    if done - start >= len(chunk):
                        continue
                    chunk = _Chunk(chunk[done - start:], done, name,
                                   [(first + start, path) for first, path in chunk.files[:-1]])
                    start = done
                items, where = score_items(chunk, name)
                try:
                    with torch.no_grad():
                        scores = score_cli._scored(model, items, args.batch_size, "score", bar).tolist()
                except ValueError as e:  # DataError included: "input K" is the K-th text of the chunk
                    raise error_at_row(e, where, lambda j: row_name(chunk, j), "response") from None
                done_inputs[0] += len(items)
                out = [dict() for _ in chunk]
                for (j, slot), s in zip(where, scores):
                    out[j]["score" if slot == "response" else f"score_{slot}"] = s
                pairs.extend(o for o in out if "score_chosen" in o)
                write(start, chunk, out)

    if args.out:
        if args.resume:
            header = {"model": score_cli._model_identity(args.model), "data": score_cli._identity(args.data),
                      "split": args.split, "dtype": args.dtype, "max_length": args.max_length, "rows": n_rows}
            score_cli._write_resumable(args, score_all, header, pairs, prog="mmreward text score")
        else:
            score_cli._write_out(args, score_all, None)
        took = time.monotonic() - began
        print(f"mmreward text score: {n_rows} rows scored ({done_inputs[0]} inputs in {took:.1f} s, "
              f"{done_inputs[0] / max(took, 1e-9):.1f} inputs/s), written to {args.out}", file=sys.stderr)
    elif args.json:
        score_all(lambda start, chunk, out: sys.stdout.write(score_cli._json_lines(chunk, out)))
    else:
        print(_TABLE_HEADER)
        score_all(lambda start, chunk, out: _print_table(start, chunk, out))
    line = score_cli.pairwise_accuracy_line(pairs)
    if line:  # the table's last line; beside JSON lines it goes to stderr, which they do not share
        print(line, file=sys.stdout if not (args.json or args.out) else sys.stderr)
    return 0


_TABLE_HEADER = f"{'row':>5}  {'score':>10}  {'rejected':>10}  prompt"


def _print_table(start: int, rows: list[dict], out: list[dict]) -> None:
    for i, (r, o) in enumerate(zip(rows, out), start):
        prompt = r.get("prompt", r.get("messages", r.get("text", "")))
        prompt = (prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)).replace("\n", " ")
        first = o.get("score", o.get("score_chosen"))
        second = f"{o['score_rejected']:10.4f}" if "score_rejected" in o else " " * 10
        print(f"{i:>5}  {first:10.4f}  {second}  {prompt[:60]}")


def _print_scores(rows: list[dict], where: list[tuple[int, str]], scores: list[float], as_json: bool) -> None:
    """The rows with their scores: a table ending with the pairwise accuracy, or JSON lines."""
    from mmreward.score_cli import _json_lines

    out = [dict() for _ in rows]
    for (i, slot), s in zip(where, scores):
        out[i]["score" if slot == "response" else f"score_{slot}"] = s
    if as_json:
        # default=str: a parquet row's bytes / timestamp / decimal columns (no JSON type) are written as text,
        # as `mmreward score` writes them, not a TypeError after every row was scored
        sys.stdout.write(_json_lines(rows, out))
        return
    print(_TABLE_HEADER)
    _print_table(0, rows, out)
    from mmreward.score_cli import pairwise_accuracy_line

    line = pairwise_accuracy_line([o for o in out if "score_chosen" in o])
    if line:
        print(line)


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
