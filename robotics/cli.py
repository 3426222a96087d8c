"""``mmreward robotics …``: collect episodes, import videos, list tasks, summarise a folder.

    mmreward robotics collect --tasks door-open-v3,drawer-open-v3 --episodes 10 --policy noisy \\
        --noise 0.3 --size 64 --action-repeat 2 --out data/mw --seed 0
    mmreward robotics import-videos --task adroit-door --out data/adroit demos/adroit-door/
    mmreward robotics tasks
    mmreward robotics info data/mw

``collect``'s options are generated from :class:`mmreward.robotics.collect.CollectConfig` and call
the same :func:`~mmreward.robotics.collect.collect_episodes` a Python user calls.
"""
from __future__ import annotations

import argparse
import sys
import typing
from collections import Counter
from dataclasses import MISSING, fields
from typing import Optional, Sequence


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        t = hints[f.name]
        t = next((a for a in typing.get_args(t) if a is not type(None)), t)  # Optional[X] -> X
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif t is list:
            parser.add_argument(flag, type=lambda s: [x for x in s.replace(" ", ",").split(",") if x],
                                default=default, help=help_text + f" (default: {','.join(default)})")
        else:
            kw = {"choices": ("expert", "noisy", "random")} if f.name == "policy" else {}
            if f.name == "flip":
                kw = {"choices": ("auto", "none", "vertical", "horizontal", "rot180")}
            shown = "" if default is None else f" (default: {default})"
            parser.add_argument(flag, type=t, default=default, help=help_text + shown, **kw)


def _collect(args: argparse.Namespace) -> int:
    from mmreward.robotics.collect import CollectConfig, collect

    config = CollectConfig(**{f.name: getattr(args, f.name) for f in fields(CollectConfig)})
    summary = collect(config)
    print("\n".join(summary.lines()))
    return 0


def _import_videos(args: argparse.Namespace) -> int:
    from mmreward.robotics.collect import import_videos

    summary = import_videos(args.sources, args.out, task=args.task, size=args.size, stride=args.stride,
                            policy=args.policy, progress=args.progress)
    print("\n".join(summary.lines()))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from mmreward.robotics.envs import list_tasks

    for suite, names in list_tasks().items():
        print(f"{suite} ({len(names)}): {' '.join(names) if names else '(package not installed)'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mmreward.robotics.data.episodes import read_manifest

    entries = read_manifest(args.folder)
    groups = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries)
    wins = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries if e.get("success"))
    frames = sum(int(e["frames"]) for e in entries)
    print(f"{args.folder}: {len(entries)} episodes, {frames} frames")
    for key in sorted(groups, key=str):
        task, policy, noise = key
        tag = f"{policy} σ={noise:g}" if policy == "noisy" else str(policy)
        print(f"  {task:<28} {tag:<14} {groups[key]:>4} episodes, {wins[key]} successful")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mmreward.robotics.collect import CollectConfig

    parser = argparse.ArgumentParser(prog="mmreward robotics", description="robot-learning data: collect, import, inspect")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect expert / noisy / random episodes (Meta-World, Adroit)",
                       description="Collect rendered episodes into an episode folder (npz files + manifest.json).")
    _add_config_options(p, CollectConfig)
    p.set_defaults(run=_collect)

    p = sub.add_parser("import-videos", help="store videos / frame folders as episodes (e.g. Adroit demos)")
    p.add_argument("sources", nargs="+", help="videos, frame folders, or folders of those (one episode each)")
    p.add_argument("--task", required=True, help="task id / label for these episodes, e.g. adroit-door")
    p.add_argument("--out", required=True, help="output episode folder")
    p.add_argument("--size", type=int, default=64, help="frame height and width (default: 64)")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame (default: 1)")
    p.add_argument("--policy", default="demo", help="policy label stored in the manifest (default: demo)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(run=_import_videos)

    p = sub.add_parser("tasks", help="list the task ids of each suite")
    p.set_defaults(run=_tasks)

    p = sub.add_parser("info", help="summarise an episode folder's manifest")
    p.add_argument("folder")
    p.set_defaults(run=_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.run(args) or 0)
    except (ValueError, RuntimeError, ImportError) as e:
        print(f"mmreward robotics {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
