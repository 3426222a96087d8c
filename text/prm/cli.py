"""``mmreward prm …``: train, score, evaluate and search with process reward models.

    mmreward prm train --data steps.jsonl --backbone path/to/causal-lm --head lm --out runs/prm \\
        --max-steps 2000 --lr 1e-5                       # the model goes to runs/prm/model
    mmreward prm train --synthetic 3000 --out runs/prm-tiny --lr 3e-3 --max-steps 600 --seed 0
    mmreward prm score --model FOLDER --data processbench.jsonl --out scores.jsonl
    mmreward prm score --model runs/prm-tiny --problem "3 +4 -2" --step 3+4=7 --step 7-2=5
    mmreward prm eval --model runs/prm-tiny --data heldout.jsonl --threshold 0.5 --sweep
    mmreward prm search --model runs/prm-tiny --synthetic 100 --policy-error-rate 0.3 \\
        --budget-steps 16 --method both --out runs/selftrain.jsonl

``--model`` is anything ``mmreward.load`` opens: a saved PRM, a training run's folder (its ``model/``)
or a published PRM (Math-Shepherd, Qwen2.5-Math-PRM, Skywork-o1-Open-PRM). Training options map one
to one onto :class:`~mmreward.text.prm.train.PRMTrainConfig` and
:class:`~mmreward.text.prm.model.PRMConfig`, search options onto
:class:`~mmreward.text.prm.search.MCTSConfig`; every command calls the Python API a user would.
Errors are one line on stderr (exit 2 for bad data, paths, devices and checkpoints).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import (CLIParser, add_config_options, add_split_options, check_output_file,
                                      check_split_sources, config_from_args, entering_subcommand, json_text, output_path,
                                      run_cli, utf8_text)

from .data import FORMATS

MODEL_SKIP = ("backbone", "input_format", "system_prompt")  # set by the backbone / a published layout


def _format(text: str) -> str:
    """``--format``: ``math-shepherd`` is ``math_shepherd`` (other choices, e.g. ``--method best-of-n``, use hyphens)."""
    return text.replace("-", "_")


def _load_prm(path: str, device: str, dtype: Optional[str] = None, step_separator: Optional[str] = None):
    import mmreward

    from .model import ProcessRewardModel

    kw = {}
    if step_separator is not None:  # only a TRL token-classification PRM leaves its separator unrecorded
        from mmreward.registry import detect, resolve_folder

        folder = resolve_folder(path)
        kind = detect(folder)[0]
        if kind == "peft-lora-adapter":  # a LoRA adapter of a TRL token-classification PRM reads as one
            from ..peft_adapters import read_adapter_config

            kind = "token-classification-prm" if read_adapter_config(folder).get("task_type") == "TOKEN_CLS" else kind
        if kind != "token-classification-prm":
            raise ValueError(f"--step-separator applies to token-classification PRMs (TRL PRMTrainer), whose folders "
                             f"do not record it; {path} is a {kind} PRM, scored with the step format it was saved with")
        kw["step_separator"] = step_separator
    model = mmreward.load(path, device=device, dtype=dtype, **kw)
    if not isinstance(model, ProcessRewardModel):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a process reward model")
    return model


def _load_model(args: argparse.Namespace):
    """The PRM at ``--model`` on ``--device``; ``--aggregation`` / ``--truncate`` override its config."""
    model = _load_prm(args.model, args.device, getattr(args, "dtype", None), getattr(args, "step_separator", None))
    overrides = {k: getattr(args, k, None) for k in ("aggregation", "truncate")}
    # replace() re-runs the config's checks (e.g. prod needs probabilities)
    model.config = dataclasses.replace(model.config, **{k: v for k, v in overrides.items() if v is not None})
    return model


def _refuse_ignored_model_flags(args: argparse.Namespace, saved: Any) -> None:
    """``--model`` continues a PRM with the config it was saved with: a model flag given another value
    (or ``--backbone``) would be ignored, so it is an error naming both values."""
    from .model import PRMConfig

    if args.backbone != "tiny":
        raise ValueError(f"--backbone {args.backbone} and --model {args.model} both name the model: give one")
    for f in dataclasses.fields(PRMConfig):
        if f.name in MODEL_SKIP:
            continue
        given, default, kept = getattr(args, f.name), f.default, getattr(saved, f.name)
        if given != default and given != kept:  # a default value cannot be told from an absent flag
            flag = "--" + f.name.replace("_", "-")
            raise ValueError(f"{flag} {given} would be ignored: --model {args.model} continues a PRM saved with "
                             f"{f.name}={kept!r}; drop {flag} (`prm score` / `prm eval` take --aggregation and "
                             "--truncate per run)")


def _build_model(args: argparse.Namespace):
    """``--model`` (continue from a saved / published PRM, its config as saved), else a fresh PRM on
    ``--backbone``: ``tiny`` (synthetic-task tokenizer + tiny Llama) or a Hugging Face model folder."""
    from .model import PRMConfig, ProcessRewardModel

    if args.model:
        model = _load_prm(args.model, args.device)
        _refuse_ignored_model_flags(args, model.config)
        return model

    cfg = {f.name: getattr(args, f.name) for f in dataclasses.fields(PRMConfig) if f.name not in MODEL_SKIP}
    if args.backbone == "tiny":
        from .synthetic import char_tokenizer, tiny_llama

        tok = char_tokenizer(args.tiny_tokenizer, max_value=args.max_value)
        return ProcessRewardModel.from_backbone(tiny_llama(tok, seed=args.seed), tok, **cfg)
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.backbone, trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    loader = AutoModelForCausalLM if cfg["head"] == "lm" else AutoModel
    return ProcessRewardModel.from_backbone(loader.from_pretrained(args.backbone, trust_remote_code=False), tok, **cfg)


def _examples(args: argparse.Namespace, path: Optional[str], synthetic: int, seed: int, split: Optional[str] = None):
    from .data import read_step_examples

    if path:
        return read_step_examples(path, format=args.format, neutral=args.neutral, split=split)
    if synthetic:
        from .synthetic import make_dataset

        return read_step_examples(make_dataset(synthetic, seed=seed, num_steps=args.num_steps, max_value=args.max_value))
    return None


def _train(args: argparse.Namespace) -> int:
    from mmreward.core.device import resolve_device
    from mmreward.core.train import end_distributed, is_main_process, seed_everything

    from .data import read_pair_examples
    from .train import PRMTrainConfig, evaluate_prm, train_prm

    config = config_from_args(PRMTrainConfig, args)
    if args.synthetic < 0:
        raise ValueError(f"--synthetic must be >= 0 (0: train on --data), got {args.synthetic}")
    if args.synthetic and args.data:  # --data was trained on and --synthetic N silently ignored
        raise ValueError(f"--data {args.data} and --synthetic {args.synthetic} both name the training data: give one")
    check_split_sources(args, "--data", "--eval-data")
    _refuse_unused_synthetic_flags(args)
    _refuse_mmreward_backbone(args.backbone)
    device = resolve_device(args.device)
    if config.objective == "ppm":
        if not args.data:
            raise ValueError("--objective ppm needs --data with PPM pairs")
        train = read_pair_examples(args.data, split=args.split)
        evals = read_pair_examples(args.eval_data, split=args.eval_split) if args.eval_data else None
    else:
        train = _examples(args, args.data, args.synthetic, config.seed + 1, args.split)
        if train is None:
            raise ValueError("pass --data FILE or --synthetic N")
        evals = _examples(args, args.eval_data, args.synthetic // 10 if args.synthetic else 0, config.seed + 2,
                          args.eval_split)
    seed_everything(config.seed)  # before the model: its new head (and a tiny backbone) draw from the RNGs
    model = _build_model(args).to(device)
    history = train_prm(model, train, config, eval_examples=evals)
    out = os.path.join(config.output_dir, "model")  # written by the trainer (rank 0) as the run ends
    main_process = is_main_process()  # read before the process group closes (every rank is "main" after)
    end_distributed()  # the other ranks end here, not waiting out rank 0's evaluation below
    if main_process:
        last = dict(history[-1]) if history else {}
        if evals and config.objective != "ppm":
            last.update({f"final_{k}": v
                         for k, v in evaluate_prm(model, evals, config.eval_threshold, sweep=True).items()})
        print(json_text({"model": out, **last}, indent=2))
        print(f"model: {out}")  # the last line, as `mmreward text train` / `vision train` end
    return 0


def _refuse_mmreward_backbone(backbone: str) -> None:
    """``--backbone`` naming a model mmreward saved: transformers failed on it with "Couldn't instantiate the
    backend tokenizer ..." (a saved PRM is continued with ``--model``)."""
    if backbone == "tiny":
        return
    from mmreward.registry import MODEL_TYPES, saved_model_type

    model_type = saved_model_type(backbone)
    if model_type in MODEL_TYPES:
        hint = (f"continue training it with --model {backbone}" if model_type == "process_reward_model" else
                "give a transformers model folder (a causal LM or an encoder) or 'tiny'")
        raise ValueError(f"--backbone {backbone} holds an mmreward {model_type!r} model, not a transformers "
                         f"backbone: {hint}")


def _refuse_unused_synthetic_flags(args: argparse.Namespace) -> None:
    """``--num-steps`` without ``--synthetic``, and ``--max-value`` without it and without the tiny backbone
    (whose tokenizer it sizes): each was silently ignored (a default value cannot be told from an absent flag,
    so only other values are refused)."""
    tiny = args.backbone == "tiny" and not args.model
    model = f"--model {args.model}" if args.model else f"--backbone {args.backbone}"
    unused = [("--num-steps", args.num_steps, 4, bool(args.data) and not args.synthetic, "shapes the --synthetic chains",
               f"it trains on --data {args.data}"),
              ("--max-value", args.max_value, 9, bool(args.data) and not args.synthetic and not tiny,
               "bounds the --synthetic chains and the tiny backbone's tokenizer", f"it trains {model} on --data {args.data}")]
    for flag, value, default, ignored, what, why in unused:
        if ignored and value != default:
            raise ValueError(f"{flag} {value} {what}, which this run does not use ({why}): drop {flag}")


def _check_batch_size(args: argparse.Namespace) -> None:
    """``--batch-size`` before the data is read and the model loads (the model's own check came after both)."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {args.batch_size}")


def _processbench(parts, examples, threshold: float) -> Optional[dict]:
    """The ProcessBench table of the examples that carry a first-error label, if any do."""
    from .eval import processbench_report

    known = [(p, e) for p, e in zip(parts, examples) if e.first_error >= -1]
    if not known:
        return None
    return processbench_report([p for p, _ in known], [e.first_error for _, e in known], [e.subset for _, e in known],
                               threshold)


def _score_sources(args: argparse.Namespace):
    """A function giving the rows ``prm score`` scores, again at each pass: one at a time
    for a file that :func:`~mmreward.core.data.streams` (memory holds a chunk, not the file); ``--problem`` /
    ``--step`` are one row."""
    from mmreward.core.data import iter_records, read_records, streams

    if args.problem is not None:  # given twice, the last one won and took every --step (the first's too)
        if len(args.problem) > 1:
            raise ValueError(f"--problem is given {len(args.problem)} times: one command scores one problem, with "
                             "its steps as --step's in order; score several solutions with --data rows")
        args.problem = args.problem[0]

    if args.data:
        given = [flag for flag, value in (("--problem", args.problem), ("--step", args.step)) if value is not None]
        if given:  # one of the two would be scored and the other silently ignored
            raise ValueError(f"--data and {' / '.join(given)} both name what to score: give --data FILE or "
                             "--problem TEXT with its --step's, not both")
        if not args.split and streams(args.data):
            return lambda: iter_records(args.data)
        rows = read_records(args.data, split=args.split)
        return lambda: iter(rows)
    check_split_sources(args, "--data")  # --split with --problem / --step: nothing to choose a split of
    if args.neutral != "ignore":  # a choice about PRM800K's labels: --problem / --step carry no labels to read
        raise ValueError(f"--neutral {args.neutral} chooses how PRM800K rows' neutral steps are labelled; "
                         "--problem / --step have no labels: leave it out, or give --data")
    if args.problem is not None and args.step:
        steps = [utf8_text(step, f"--step {i + 1}") for i, step in enumerate(args.step)]
        from .data import StepExample

        example = StepExample(utf8_text(args.problem, "--problem"), steps, [-100.0] * len(steps))
        return lambda: iter([example])
    raise ValueError("pass --data FILE or --problem TEXT with one --step per step")


def _example_chunks(args: argparse.Namespace, read: Any, size: int):
    """``(examples, where)`` a chunk of ``size`` solutions at a time, in the file's order: the StepExamples of the
    rows (MCTS exports' PPM pair rows left out, as :func:`~.data.read_step_examples` reads them) and, per example,
    ``"file: row k"`` for errors (a folder's shards named by shard)."""
    from mmreward.core.data import DataError, row_origin

    from .data import StepExample, parse_row

    rows = read()
    examples, where = [], []
    for i, r in enumerate(rows):
        if isinstance(r, dict) and r.get("type") == "pair":
            continue
        file, k = row_origin(rows, i) or (args.data, i)
        try:
            examples.append(r if isinstance(r, StepExample) else parse_row(r, k, args.format, args.neutral))
        except DataError as e:
            raise DataError(f"{file}" + (f" (split {args.split!r})" if args.split else "") + f": {e}") from None
        where.append(f"{file}: row {k}" if args.data else f"input {i}")  # --problem / --step: the one input
        if len(examples) == size:
            yield examples, where
            examples, where = [], []
    if examples:
        yield examples, where


class _ProcessBenchTally:
    """The ProcessBench table of the labelled rows, counted a chunk at a time (per subset: erroneous / correct
    samples and how many of each the PRM got right), so that memory does not grow with the file; the same table
    as :func:`~.eval.processbench_report` of all rows at once."""

    def __init__(self, threshold: float) -> None:
        self.threshold, self.counts = threshold, {}

    def add(self, parts: list, examples: list) -> None:
        from .eval import predict_first_error

        known = [(p, e) for p, e in zip(parts, examples) if e.first_error >= -1]
        if not known:
            return
        for pred, (_, e) in zip(predict_first_error([p for p, _ in known], self.threshold), known):
            c = self.counts.setdefault(e.subset or "all", [0, 0, 0, 0])  # erroneous, right; correct, right
            side = 0 if e.first_error >= 0 else 2
            c[side] += 1
            c[side + 1] += pred == e.first_error

    def report(self) -> Optional[dict]:
        if not self.counts:
            return None
        from .eval import processbench_f1, processbench_table

        # per subset, the F1 of a stand-in sample list with the same counts (the official formula, its notes and
        # NaNs kept in one place: eval.processbench_f1); a sample list per subset, not the file's step scores
        table = {}
        for name, (n_err, right_err, n_ok, right_ok) in self.counts.items():
            pred = [0] * right_err + [-1] * (n_err - right_err) + [-1] * right_ok + [0] * (n_ok - right_ok)
            table[name] = processbench_f1(pred, [0] * n_err + [-1] * n_ok)
        return processbench_table(table, self.threshold)


def _at_row(error: Exception, where: list[str]) -> Exception:
    """``error`` with its leading ``input K`` (the K-th solution of a chunk) told as ``where[K]``, the file and row
    of --data."""
    from mmreward.core.cli_config import error_at_row

    return error_at_row(error, [(j, "score") for j in range(len(where))], where.__getitem__, "score")


def _score(args: argparse.Namespace) -> int:
    """Solutions read, checked (every one, before any is scored), scored and written a chunk at a time with the
    helpers of ``mmreward score`` (:mod:`mmreward.score_cli`): memory holds a chunk of rows, not the file.
    ``--resume`` keeps the rows scored so far in ``OUT.partial`` and continues a stopped run from there, as
    ``mmreward score --resume`` does."""
    import time

    import torch

    from mmreward import score_cli

    from .train import check_threshold, solutions

    # before the work, not after it; an existing file of the model folder would be replaced
    _check_batch_size(args)
    if args.out == "-":  # the usual name of stdout
        args.out = None
    if args.resume and (not args.out or not args.data):
        raise ValueError("--resume continues a file of scored rows: it needs --data rows and an --out file")
    if args.out:
        args.out = os.path.expanduser(args.out)
        kind = score_cli._other_format(args.out)
        if kind:  # JSON lines under a .parquet / .csv name: a reader of that format fails on it, or misreads it
            raise ValueError(f"--out {args.out!r} names a {kind} file, but --out writes the score rows as JSON lines: "
                             f"name it .jsonl (or .jsonl.gz, gzipped) and convert it if you need {kind}")
    check_output_file(args.out, "--out", [("--data", args.data)], folders=[("--model", args.model)])
    read = _score_sources(args)
    size = -(-score_cli.CHUNK_ROWS // args.batch_size) * args.batch_size  # whole batches per chunk
    n = 0
    for examples, _ in _example_chunks(args, read, size):  # bad data fails before the model loads
        n += len(examples)
    if not n:  # else the first use fails far from here ("score_parts got no inputs")
        from mmreward.core.data import DataError

        if next(read(), None) is None:
            raise DataError(f"{args.data}: no rows" + (f" in split {args.split!r}" if args.split else ""))
        raise DataError(f"{args.data}: holds only PPM pair rows (type 'pair'), no stepwise solutions: read them with "
                        "read_pair_examples (CLI: prm train --objective ppm)")
    model = _load_model(args)
    check_threshold(model, args.threshold, "--threshold")  # before the scoring, not in a meaningless table
    for examples, where in _example_chunks(args, read, size):  # every solution fits (or --truncate) before any is scored
        try:
            score_cli._precheck(model, solutions(examples))
        except (ValueError, TypeError) as e:
            raise _at_row(e, where) from None

    tally, began, new = _ProcessBenchTally(args.threshold), time.monotonic(), [0]
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    def score_all(write: Any, done: int = 0, kept: Any = None) -> None:
        """Score every solution from ``done`` on (``kept(start, rows, lines)``: those before it, scored by an earlier
        run, checked and read back for the ProcessBench table) and ``write(start, rows, scores)`` a chunk at a time."""
        # each warning told once at the end, --truncate's count summed over the file and its first solution named
        with score_cli.scoring(n, progress) as (bar, told):
            start = 0
            for examples, where in _example_chunks(args, read, size):
                rows = [{"id": e.id} if e.id else {} for e in examples]
                if start < done:
                    cut = min(done - start, len(examples))
                    lines: list = []
                    kept(start, rows[:cut], lines)
                    tally.add([_kept_steps(line, e, at, args, told, model) for line, e, at in
                               zip(lines, examples, where)], examples[:cut])
                    if bar is not None:
                        bar.update(cut)
                    examples, where, rows, start = examples[cut:], where[cut:], rows[cut:], start + cut
                    if not examples:
                        continue
                told.name = where.__getitem__  # "first: input 17" of a call is its file and row
                try:
                    with torch.no_grad():
                        parts = score_cli._scored(model, solutions(examples), args.batch_size, "score_parts", bar, told)
                except (ValueError, TypeError) as e:
                    raise _at_row(e, where) from None
                new[0] += len(examples)
                agg = model.aggregate_parts(parts).tolist()
                # the model's own values, as `mmreward score` prints them: rounded to 6 places, a product of 18
                # step probabilities (1.2e-6, --aggregation prod) lost a fifth of its value, and a smaller one
                # read as 0.0, tying the solutions a best-of-N pick compares
                out = [{"step_scores": [float(x) if x == x else None for x in p.tolist()],  # None: truncated
                        "score": float(a)} for p, a in zip(parts, agg)]
                tally.add(parts, examples)
                write(start, rows, out)
                start += len(rows)

    if args.out and args.resume:
        header = {"model": score_cli._model_identity(args.model), "data": score_cli._identity(args.data),
                  "split": args.split, "format": args.format, "neutral": args.neutral, "dtype": args.dtype,
                  "aggregation": model.config.aggregation, "truncate": model.config.truncate,
                  "step_separator": args.step_separator, "rows": n}
        score_cli._write_resumable(args, score_all, header, [], prog="mmreward prm score", score_keys=("step_scores",))
    elif args.out:
        score_cli._write_out(args, score_all, None)
    else:
        score_all(lambda start, rows, out: sys.stdout.write(score_cli._json_lines(rows, out)))
    if args.out:
        print(f"wrote {n} rows to {args.out}")
        took = time.monotonic() - began
        print(f"mmreward prm score: {n} solutions ({new[0]} scored in {took:.1f} s, {new[0] / max(took, 1e-9):.1f} "
              "solutions/s)", file=sys.stderr)
    report = tally.report()
    if report is not None:
        print(json_text({"processbench": report}))
    return 0


def _kept_steps(line: dict, example: Any, where: str, args: argparse.Namespace, told: Any, model: Any) -> Any:
    """The step scores of a solution an earlier ``--resume`` run kept (null: a step truncation left unscored, counted
    in the truncation warning as if scored now), checked against the solution it is of."""
    import torch

    from mmreward.core.data import DataError

    steps = line.get("step_scores")
    if not isinstance(steps, list) or len(steps) != len(example.steps):
        raise DataError(f"{args.out}.partial: {where} has {len(example.steps)} steps, but its kept scores are of "
                        f"another solution (the data changed since it was scored): delete the file to start over")
    if None in steps:
        first = steps.index(None)
        told.add_cut_steps(model._length_limit()[1], model.config.aggregation, 1, steps.count(None),
                           f"{where}, steps {first}..{len(steps) - 1} of {len(steps)}")
    return torch.tensor([float("nan") if x is None else x for x in steps], dtype=torch.float32)


def _eval(args: argparse.Namespace) -> int:
    from .data import read_step_examples
    from .train import check_labelled, check_threshold, solutions, step_metrics

    # before the work, not after it; an existing file of the model folder would be replaced
    _check_batch_size(args)
    check_output_file(args.out, "--out", [("--data", args.data)], folders=[("--model", args.model)])
    examples = read_step_examples(args.data, format=args.format, neutral=args.neutral, split=args.split)
    check_labelled(examples, args.data)  # before the model loads
    model = _load_model(args)
    check_threshold(model, args.threshold, "--threshold")  # before the scoring, not in a meaningless table
    from mmreward import score_cli

    # a bar on a terminal, as `prm score` shows it (a large file scored silently for hours)
    with score_cli.scoring(len(examples), sys.stderr.isatty() if args.progress is None else args.progress) as (bar, _):
        parts = score_cli._scored(model, solutions(examples), args.batch_size, "score_parts", bar)
    out: dict = step_metrics(parts, examples, args.threshold, sweep=args.sweep)
    report = _processbench(parts, examples, args.threshold)
    if report is not None:
        out["processbench"] = report
    text = json_text(out, indent=2)
    if args.out:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def _search(args: argparse.Namespace) -> int:
    from .search import MCTSConfig, compare_search

    if args.export and args.method == "best-of-n":  # the export holds MCTS traces: it would be written empty
        raise ValueError("--out writes MCTS self-training traces, but --method best-of-n runs no MCTS: use "
                         "--method mcts or both, or drop --out")
    check_output_file(args.export, "--out", folders=[("--model", args.model)])
    # the flags' own names, before the model loads (compare_search named n_problems / num_steps after it)
    for flag, name, value in (("--synthetic", "n_problems", args.synthetic),
                              ("--num-steps", "num_steps", args.num_steps)):
        if value < 1:
            raise ValueError(f"{flag}: {name} must be an integer >= 1, got {value}")
    config = config_from_args(MCTSConfig, args)
    model = _load_model(args)
    out = compare_search(model, n_problems=args.synthetic, num_steps=args.num_steps, error_rate=args.policy_error_rate,
                         config=config, method=args.method, seed=args.seed,
                         export=args.export, max_value=args.max_value, reduce=args.aggregation)
    print(json_text(out, indent=2))
    return 0


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")


def _finite_threshold(text: str) -> float:
    """``--threshold``: refused at parse time when not a finite number, so that ``nan`` fails before
    anything is scored or written (every step comparison with NaN is false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_scoring(p: argparse.ArgumentParser, batch_size: int) -> None:
    p.add_argument("--model", required=True, help="a saved PRM, a training run's folder or a published PRM folder")
    p.add_argument("--format", default="auto", type=_format, choices=FORMATS,
                   help="format of --data rows (default: by their fields)")
    p.add_argument("--neutral", default="ignore", choices=("ignore", "good", "bad"),
                   help="PRM800K steps rated 0 (neutral): left unlabelled, or labelled good / bad (default: ignore)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"solutions per forward pass (default: {batch_size})")
    p.add_argument("--threshold", type=_finite_threshold, default=0.5,
                   help="ProcessBench: the first step scoring below this is the predicted error (default: 0.5)")
    p.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=None,
                   help="score only the steps that fit the model's max_length (default: the model's setting; off: "
                        "a longer input is an error)")
    p.add_argument("--dtype", default=None, help="cast the model: fp32 | bf16 | fp16 (default: as saved)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--step-separator", type=_separator, default=None,
                   help="a TRL PRMTrainer token-classification PRM's step separator, which its folder does not "
                        "record (default: TRL's '\\n'; '\\n\\n' is a blank line)")
    _add_device(p)


def _separator(text: str) -> str:
    """``--step-separator``: ``\\n`` typed on a command line is a newline."""
    from mmreward.core.cli_config import unescape_separator

    value = unescape_separator(text)
    if not value:
        raise argparse.ArgumentTypeError("must be a non-empty string")
    return value


def _parser() -> CLIParser:
    from .model import AGGREGATIONS, HEADS, PRMConfig
    from .search import MCTSConfig
    from .train import OBJECTIVES, PRMTrainConfig

    parser = CLIParser(prog="mmreward prm", description="process reward models")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CLIParser)

    p = sub.add_parser("train", help="train a PRM (bce / mse / ppm) and save it to OUT/model")
    p.add_argument("--data", help="training data (.json / .jsonl / .parquet / dataset folder / hub id): TRL, Math-Shepherd, PRM800K, "
                                  "ProcessBench or PPM pairs")
    p.add_argument("--eval-data", help="held-out data, same formats")
    add_split_options(p, "--data", "--eval-data")
    p.add_argument("--format", default="auto", type=_format, choices=FORMATS,
                   help="format of --data / --eval-data rows (default: by their fields)")
    p.add_argument("--neutral", default="ignore", choices=("ignore", "good", "bad"),
                   help="PRM800K steps rated 0 (neutral): left unlabelled, or labelled good / bad (default: ignore)")
    p.add_argument("--synthetic", type=int, default=0, help="instead of --data: N synthetic arithmetic chains")
    p.add_argument("--num-steps", type=int, default=4, help="steps per synthetic chain")
    p.add_argument("--max-value", type=int, default=9, help="synthetic chains' values stay in 0..MAX_VALUE")
    p.add_argument("--model", help="continue training this saved or published PRM (the model options below are "
                                   "then its own)")
    p.add_argument("--backbone", default="tiny", help="'tiny' (synthetic-task tiny Llama) or an HF model folder")
    p.add_argument("--tiny-tokenizer", default="term", choices=("char", "term", "step"),
                   help="tokenizer of the tiny backbone (see synthetic.char_tokenizer)")
    _add_device(p)
    add_config_options(p.add_argument_group("model"), PRMConfig, skip=MODEL_SKIP,
                       choices={"head": HEADS, "aggregation": AGGREGATIONS, "score": ("sigmoid", "identity")})
    add_config_options(p.add_argument_group("training"), PRMTrainConfig, choices={"objective": OBJECTIVES})
    p.set_defaults(fn=_train)

    p = sub.add_parser("score", help="per-step scores of solutions (and the ProcessBench table of labelled rows)")
    _add_scoring(p, 16)
    p.add_argument("--data", help="solutions: ProcessBench / TRL / Math-Shepherd / PRM800K rows")
    add_split_options(p, "--data")
    p.add_argument("--problem", action="append", help="instead of --data: one problem ...")
    p.add_argument("--step", action="append", help="... and its steps, one --step each, in order")
    p.add_argument("--aggregation", choices=AGGREGATIONS, help="a solution's score from its steps (default: the model's)")
    p.add_argument("--out", type=output_path, help="write the score rows (JSON lines) here instead of stdout (.gz: "
                                                   "gzipped; - : stdout); the file appears whole when scoring ends")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows scored so far in OUT.partial, and continue the scoring a run that stopped left "
                        "there (needs --out and --data)")
    p.set_defaults(fn=_score)

    p = sub.add_parser("eval", help="ProcessBench F1 (per subset) and step macro-F1 on labelled data")
    _add_scoring(p, 32)
    p.add_argument("--data", required=True, help="labelled solutions (.json / .jsonl / .parquet / dataset folder / hub id): ProcessBench / "
                                                 "TRL / Math-Shepherd / PRM800K rows")
    add_split_options(p, "--data")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=False, help="also report the best threshold")
    p.add_argument("--out", type=output_path, help="also write the metrics (JSON) to this file")
    p.set_defaults(fn=_eval)

    p = sub.add_parser("search", help="PRM-guided MCTS vs Best-of-N on synthetic problems with a noisy policy")
    p.add_argument("--model", required=True, help="the PRM that guides the search (a saved PRM or a training run's folder)")
    p.add_argument("--synthetic", type=int, default=100, help="number of held-out synthetic problems (default: 100)")
    p.add_argument("--num-steps", type=int, default=4, help="steps per problem (default: 4)")
    p.add_argument("--max-value", type=int, default=9, help="problems' values stay in 0..MAX_VALUE (default: 9)")
    p.add_argument("--policy-error-rate", type=float, default=0.3,
                   help="chance the noisy policy writes a wrong step (default: 0.3)")
    p.add_argument("--method", default="both", choices=("mcts", "best-of-n", "both"),
                   help="search method(s) to run and compare (default: both)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problems and the policy (default: 0)")
    p.add_argument("--aggregation", default="min", choices=AGGREGATIONS,
                   help="how best-of-N turns a solution's step scores into one (default: min)")
    p.add_argument("--out", dest="export", type=output_path, help="write MCTS self-training data (value-target traces + PPM pairs) as JSONL")
    p.add_argument("--export", dest="export", type=output_path, help=argparse.SUPPRESS)
    _add_device(p)
    add_config_options(p.add_argument_group("search"), MCTSConfig)
    p.set_defaults(fn=_search)
    return parser


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    entering_subcommand(args.command)
    return int(args.fn(args) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli("mmreward prm", _main, sys.argv[1:] if argv is None else argv)
