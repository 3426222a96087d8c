"""``mmreward text eval``: evaluate a reward model on RM-Bench or a RewardBench-format file.

    mmreward text eval --model runs/rm --benchmark rm-bench --data /path/to/rm-bench [--json]
    mmreward text eval --model runs/rm --benchmark rewardbench --data reward-bench.jsonl --out eval.json
    mmreward text eval --model runs/rm --benchmark rewardbench-2 --data reward-bench-2/ --split test

Options map one to one onto :class:`EvalConfig`; :func:`run_eval` is the same code path from Python.
The RM-Bench folder defaults to ``$MMREWARD_RM_BENCH`` when ``--data`` is not given.
"""
from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from mmreward.core.cli_config import (CLIParser, add_config_options, check_output_file, config_from_args, json_text,
                                      run_cli)

BENCHMARKS = ("rm-bench", "rewardbench", "rewardbench-2")


@dataclass
class EvalConfig:
    model: str = field(default="", metadata={"help": "reward model folder (anything mmreward.load opens that scores text pairs)"})
    benchmark: str = field(default="rm-bench", metadata={"help": "rm-bench | rewardbench | rewardbench-2"})
    data: str = field(default="", metadata={"help": "data file / folder (rm-bench default: $MMREWARD_RM_BENCH)"})
    split: str = field(default="", metadata={"help": "rewardbench / rewardbench-2: split of --data when it holds several (a saved DatasetDict: raw | filtered; test)"})
    domains: str = field(default="", metadata={"help": "rm-bench: comma-separated domains to keep, e.g. chat,safety (safety: both safety files; default: all)"})
    merge_safety: bool = field(default=False, metadata={"help": "rm-bench: pool safety-refuse + safety-response into 'safety'"})
    limit: int = field(default=0, metadata={"help": "evaluate only the first N items / pairs (0: all)"})
    batch_size: int = field(default=16, metadata={"help": "scoring batch size"})
    max_length: int = field(default=0, metadata={"help": "tokens per input (0: the model's own max_length)"})
    dtype: str = field(default="", metadata={"help": "fp32 | bf16 | fp16: cast the model (default: as saved)"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N | auto"})
    json: bool = field(default=False, metadata={"help": "print the result as JSON instead of a table"})
    output: str = field(default="", metadata={"help": "also write the full JSON result to this file", "flag": "--out"})
    progress: bool = field(default=True, metadata={"help": "show a scoring progress bar"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # EvalConfig(batch_size="8") used to fail as "'<' not supported ..."
            v, kind = getattr(self, f.name), {"int": int, "bool": bool, "str": str}.get(str(f.type))
            if kind is str and isinstance(v, os.PathLike):  # a pathlib.Path for model / data / output
                v = os.fspath(v)
                setattr(self, f.name, v)
            if kind is None:
                continue
            if kind is int and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
                raise TypeError(f"EvalConfig.{f.name} must be an integer, got {v!r}")
            if kind is not int and not isinstance(v, kind):
                raise TypeError(f"EvalConfig.{f.name} must be a {kind.__name__}, got {v!r}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {self.benchmark!r}")
        for name in ("limit", "max_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_length == 1:  # refused by the model's config only once it had loaded and the data was read
            raise ValueError("max_length must be 0 (the model's own) or >= 2 tokens, got 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.benchmark != "rm-bench":  # RM-Bench's options: silently ignored on another benchmark
            given = [flag for flag, on in (("--domains", self.domains), ("--merge-safety", self.merge_safety)) if on]
            if given:
                raise ValueError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to --benchmark rm-bench "
                                 f"only, not {self.benchmark}")
        elif self.split:  # RM-Bench is a folder of <domain>.json files (or one file): --domains picks among them
            raise ValueError("--split applies to --benchmark rewardbench / rewardbench-2 only; RM-Bench data is chosen "
                             "with --domains")


def load_scorer(config: EvalConfig):
    """The reward model in ``config.model`` on ``config.device``, ``max_length`` applied."""
    import mmreward

    if not config.model:
        raise ValueError("no model: pass --model FOLDER")
    model = mmreward.load(config.model, device=config.device, dtype=config.dtype or None)
    if config.max_length:
        if not hasattr(getattr(model, "config", None), "max_length"):
            raise ValueError(f"--max-length applies to scalar reward models, not to a {type(model).__name__}")
        # replace() runs the model config's own check (an integer >= 2)
        model.config = dataclasses.replace(model.config, max_length=config.max_length)
    return model


def run_eval(config: EvalConfig, scorer=None, *, own_batch_size: bool = False) -> dict:
    """Evaluate ``scorer`` (default: the reward model in ``config.model``) as ``config`` says. ``own_batch_size``
    (the CLI without ``--batch-size``): a model with a batch size of its own (``default_batch_size``: a generative
    judge's saved ``batch_size``) scores with it, and ``config.batch_size`` is set to it; ``config.batch_size`` is
    for the others."""
    from .rewardbench import evaluate_rewardbench, load_rewardbench
    from .rewardbench2 import evaluate_rewardbench2, load_rewardbench2
    from .rmbench import evaluate_rmbench, load_rmbench

    data = config.data or (os.environ.get("MMREWARD_RM_BENCH", "") if config.benchmark == "rm-bench" else "")
    if not data:
        raise ValueError("no data: pass --data (or set $MMREWARD_RM_BENCH for rm-bench)")
    if config.benchmark == "rm-bench":
        domains = [d.strip() for d in config.domains.split(",") if d.strip()] or None  # "chat, code" as "chat,code"
        items = load_rmbench(data, domains)
        if config.limit:
            items = items[:config.limit]
    else:
        load = load_rewardbench2 if config.benchmark == "rewardbench-2" else load_rewardbench
        rows = load(data, config.split or None)
        if config.limit:
            rows = rows[:config.limit]
    scorer = scorer if scorer is not None else load_scorer(config)
    own = getattr(scorer, "default_batch_size", None) if own_batch_size else None
    if isinstance(own, int) and not isinstance(own, bool) and own >= 1:
        config.batch_size = own  # what the result file's config records is what was used
    if config.benchmark == "rm-bench":
        return evaluate_rmbench(scorer, items, batch_size=config.batch_size, merge_safety=config.merge_safety,
                                progress=config.progress)
    if config.benchmark == "rewardbench-2":
        return evaluate_rewardbench2(scorer, rows, batch_size=config.batch_size, progress=config.progress)
    return evaluate_rewardbench(scorer, rows, batch_size=config.batch_size, progress=config.progress)


def _check_out_not_rmbench_data(config: EvalConfig) -> None:
    """Refuse an ``--out`` that is one of the RM-Bench data files of the ``--data`` folder (``--out
    rm-bench/chat.json`` replaced the benchmark's chat items with the result). A result file there (a rerun
    into the same ``--out``) is fine: the folder reader skips it."""
    from .rmbench import _is_eval_result

    data = config.data or os.environ.get("MMREWARD_RM_BENCH", "")
    out = config.output
    if config.benchmark != "rm-bench" or not out or not data or not os.path.isdir(data) or not os.path.isfile(out):
        return
    if (os.path.realpath(os.path.dirname(os.path.abspath(out))) == os.path.realpath(data)
            and out.endswith((".json", ".jsonl")) and not _is_eval_result(out)):
        raise ValueError(f"--out {out} is an RM-Bench data file of the --data folder {data}: writing the result "
                         "there would replace those items; name a file outside that folder")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .bias import format_bias
    from .rewardbench import format_rewardbench
    from .rewardbench2 import format_rewardbench2
    from .rmbench import format_rmbench

    parser = CLIParser(prog="mmreward text eval", description="evaluate a reward model on RM-Bench / RewardBench / RewardBench 2")
    add_config_options(parser, EvalConfig)
    parser.set_defaults(batch_size=None)  # None: not given, the model's own (a judge's 16 replaced its saved one)
    for action in parser._actions:
        if action.dest == "batch_size" and action.help != argparse.SUPPRESS:
            action.help = "scoring batch size (default: the model's own: 16, a generative judge's saved batch_size)"
    args = parser.parse_args(argv)
    own_batch_size = args.batch_size is None
    if own_batch_size:
        args.batch_size = EvalConfig.batch_size
    config = config_from_args(EvalConfig, args)
    if config.output and os.path.isdir(config.output):  # now, not after the whole evaluation has run
        raise ValueError(f"--out {config.output} is a folder: give the path of the result JSON file")
    check_output_file(config.output, "--out", [("--data", config.data)], folders=[("--model", config.model)])
    _check_out_not_rmbench_data(config)
    result = run_eval(config, own_batch_size=own_batch_size)
    if config.output:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(config.output, json_text({"config": asdict(config), **result}, indent=2) + "\n")
    if config.json:
        # the per-response scores (RewardBench 2: `scores`, a list per row) go to --out only, as for every benchmark
        slim = {k: v for k, v in result.items() if not k.startswith("scores_") and k != "scores"}
        print(json_text(slim, indent=2))
        return 0
    if config.benchmark == "rewardbench-2":  # best-of-N rows: no pairwise bias probe
        print("\n".join(format_rewardbench2(result)))
        return 0
    lines = format_rmbench(result) if config.benchmark == "rm-bench" else format_rewardbench(result)
    print("\n".join(lines + format_bias(result["bias"])))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("mmreward text eval", main, sys.argv[1:]))
