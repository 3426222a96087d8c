"""``mmreward text merge`` — WARM: average reward models fine-tuned from one init.

    mmreward text merge runs/rm_s0 runs/rm_s1 runs/rm_s2 --out runs/rm_warm
    mmreward text merge runs/rm_s0 runs/rm_s1 --weights 0.7 0.3 --out runs/rm_warm [--no-check-init]

Options map one to one onto :class:`MergeConfig`; :func:`merge` is the same code path from Python.
"""
from __future__ import annotations

import argparse
import json
import numbers
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, check_output_folder, output_path, run_cli


@dataclass
class MergeConfig:
    members: list = field(default_factory=list, metadata={"help": "reward model folders to average (>= 2)"})
    out: str = field(default="", metadata={"help": "folder for the averaged model"})
    weights: Optional[list] = field(default=None, metadata={"help": "one non-negative weight per model (normalised; default uniform)"})
    check_init: bool = field(default=True, metadata={"help": "refuse members that were not fine-tuned from one init"})
    max_init_distance: float = field(default=0.8, metadata={"help": "largest relative L2 distance to member 0 accepted as one init"})


def merge(config: MergeConfig):
    """Average ``config.members`` (WARM) and save the result to ``config.out``; returns the model."""
    from .warm import warm_average

    # a string's characters were taken for the members ("the model folder / is named twice"), and a string
    # check_init ("no") was truthy: the check ran; True for max_init_distance read as a limit of 1
    if isinstance(config.members, (str, bytes, os.PathLike)) or not isinstance(config.members, (list, tuple)):
        raise TypeError(f"MergeConfig.members must be a list of model folders, got {config.members!r}")
    if not isinstance(config.check_init, bool):
        raise TypeError(f"MergeConfig.check_init must be True or False, got {config.check_init!r}")
    if isinstance(config.max_init_distance, bool) or not isinstance(config.max_init_distance, numbers.Real):
        raise TypeError(f"MergeConfig.max_init_distance must be a number, got {config.max_init_distance!r}")
    if len(config.members) < 2:
        raise ValueError(f"merge needs at least 2 model folders, got {len(config.members)}")
    if not config.out:
        raise ValueError("merge needs an output folder (--out)")
    out = os.path.realpath(os.path.expanduser(os.fspath(config.out)))
    seen: dict = {}
    for m in config.members:
        if not isinstance(m, (str, os.PathLike)):
            continue
        m = os.path.expanduser(os.fspath(m))
        real = os.path.realpath(m)
        if not os.path.isfile(os.path.join(m, "config.json")) and os.path.isfile(os.path.join(m, "model", "config.json")):
            real = os.path.realpath(os.path.join(m, "model"))  # a training run's folder: its model/
        if real in seen:  # averaged with itself: silently a copy (or a hidden 2:1 weighting)
            raise ValueError(f"merge: the model folder {real} is named twice ({seen[real]!r} and {m!r}); give each "
                             "member once (--weights sets unequal shares)")
        seen[real] = m
        if out in (os.path.realpath(m), os.path.realpath(os.path.join(m, "model"))):
            raise ValueError(f"merge: the output folder {config.out} is the member {m}: the merged model would "
                             "replace it; save it to another folder")
    model = warm_average(list(config.members), config.weights, check_init=config.check_init,
                         max_init_distance=config.max_init_distance)
    model.save_pretrained(config.out)
    return model


def merge_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = CLIParser(prog="mmreward text merge", description="WARM: weight-average reward models fine-tuned from one init")
    parser.add_argument("members", nargs="+", help=MergeConfig.__dataclass_fields__["members"].metadata["help"])
    parser.add_argument("--out", required=True, type=output_path, help=MergeConfig.__dataclass_fields__["out"].metadata["help"])
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help=MergeConfig.__dataclass_fields__["weights"].metadata["help"])
    parser.add_argument("--check-init", action=argparse.BooleanOptionalAction, default=True,
                        help=MergeConfig.__dataclass_fields__["check_init"].metadata["help"])
    parser.add_argument("--max-init-distance", type=float, default=0.8,
                        help=MergeConfig.__dataclass_fields__["max_init_distance"].metadata["help"])
    args = parser.parse_args(argv)
    if not args.check_init and args.max_init_distance != parser.get_default("max_init_distance"):
        # the bound of the init check that --no-check-init skips: silently ignored
        raise ValueError(f"--max-init-distance {args.max_init_distance:g} bounds the init check, which --no-check-init "
                         "turns off: give one of them")
    check_output_folder(args.out, "--out")  # before the members are loaded and averaged
    config = MergeConfig(members=args.members, out=args.out, weights=args.weights, check_init=args.check_init,
                         max_init_distance=args.max_init_distance)
    merge(config)
    print(json.dumps({"out": config.out, "members": config.members, "weights": config.weights}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("mmreward text merge", merge_main, sys.argv[1:]))
