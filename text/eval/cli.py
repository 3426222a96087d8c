"""``mmreward text eval``: evaluate a reward model on RM-Bench or a RewardBench-format file.

    mmreward text eval --model runs/rm --benchmark rm-bench --data /path/to/rm-bench [--json]
    mmreward text eval --model runs/rm --benchmark rewardbench --data reward-bench.jsonl --output eval.json

Options map one to one onto :class:`EvalConfig`; :func:`run_eval` is the same code path from Python.
The RM-Bench folder defaults to ``$MMREWARD_RM_BENCH`` when ``--data`` is not given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options

BENCHMARKS = ("rm-bench", "rewardbench")


@dataclass
class EvalConfig:
    model: str = field(default="", metadata={"help": "reward model folder (RewardModel.from_pretrained)"})
    benchmark: str = field(default="rm-bench", metadata={"help": "rm-bench | rewardbench"})
    data: str = field(default="", metadata={"help": "data file / folder (rm-bench default: $MMREWARD_RM_BENCH)"})
    domains: str = field(default="", metadata={"help": "rm-bench: comma-separated domains to keep (default: all)"})
    merge_safety: bool = field(default=False, metadata={"help": "rm-bench: pool safety-refuse + safety-response into 'safety'"})
    limit: int = field(default=0, metadata={"help": "evaluate only the first N items / pairs (0: all)"})
    batch_size: int = field(default=16, metadata={"help": "scoring batch size"})
    max_length: int = field(default=0, metadata={"help": "truncate inputs to this many tokens (0: the model's limit)"})
    bf16: bool = field(default=False, metadata={"help": "score under bf16 autocast"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N"})
    json: bool = field(default=False, metadata={"help": "print the result as JSON instead of a table"})
    output: str = field(default="", metadata={"help": "also write the full JSON result to this file"})
    progress: bool = field(default=False, metadata={"help": "show a scoring progress bar"})

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {self.benchmark!r}")
        for name in ("limit", "max_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def run_eval(config: EvalConfig, scorer=None) -> dict:
    """Evaluate ``scorer`` (default: the RewardModel in ``config.model``) as ``config`` says."""
    import torch

    from .rewardbench import evaluate_rewardbench, load_rewardbench
    from .rmbench import evaluate_rmbench, load_rmbench

    data = config.data or (os.environ.get("MMREWARD_RM_BENCH", "") if config.benchmark == "rm-bench" else "")
    if not data:
        raise ValueError("no data: pass --data (or set $MMREWARD_RM_BENCH for rm-bench)")
    if scorer is None:
        if not config.model:
            raise ValueError("no model: pass --model FOLDER")
        from mmreward.text.reward_model import RewardModel

        rm = RewardModel.from_pretrained(config.model, device=config.device)
        kw = {"batch_size": config.batch_size, "dtype": torch.bfloat16 if config.bf16 else None}
        if config.max_length:
            kw["max_length"] = config.max_length

        def scorer(prompts, responses):
            with warnings.catch_warnings():  # one truncation summary per batch would flood the output
                warnings.filterwarnings("ignore", message="truncated")
                return rm.score(prompts, responses, **kw)

    if config.benchmark == "rm-bench":
        domains = [d for d in config.domains.split(",") if d] or None
        items = load_rmbench(data, domains)
        if config.limit:
            items = items[:config.limit]
        return evaluate_rmbench(scorer, items, batch_size=config.batch_size, merge_safety=config.merge_safety,
                                progress=config.progress)
    rows = load_rewardbench(data)
    if config.limit:
        rows = rows[:config.limit]
    return evaluate_rewardbench(scorer, rows, batch_size=config.batch_size, progress=config.progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .bias import format_bias
    from .rewardbench import format_rewardbench
    from .rmbench import format_rmbench

    parser = CLIParser(prog="mmreward text eval", description="evaluate a reward model on RM-Bench / RewardBench")
    add_config_options(parser, EvalConfig)
    args = parser.parse_args(argv)
    try:
        config = EvalConfig(**{f.name: getattr(args, f.name) for f in fields(EvalConfig)})
        result = run_eval(config)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        print(f"mmreward text eval: error: {e}", file=sys.stderr)
        return 2
    if config.output:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(config.output, json.dumps({"config": asdict(config), **result}, indent=2) + "\n")
    if config.json:
        slim = {k: v for k, v in result.items() if not k.startswith("scores_")}
        print(json.dumps(slim, indent=2))
        return 0
    lines = format_rmbench(result) if config.benchmark == "rm-bench" else format_rewardbench(result)
    print("\n".join(lines + format_bias(result["bias"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
