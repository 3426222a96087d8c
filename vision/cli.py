"""``mmreward score``, ``mmreward score-video`` and ``mmreward vision train`` (the VLM reward model /
VisualPRM commands live in :mod:`mmreward.vision.vlm_cli`).

    mmreward vision train --data synthetic --n-train 6400 --no-head-dropout --output-dir runs/shapes \\
        --max-steps 400 --lr 4e-3 --batch-size 16 --warmup-steps 20
    mmreward vision train --data prefs.jsonl --eval-data held.jsonl --backbone path/to/clip --lr 1e-5
    mmreward score --model runs/shapes/model --prompt "two red circles on the left" a.png b.png [--json]
    mmreward score-video --model runs/shapes/model --prompt "a blue square" clip.mp4 --plot score.png [--json]

``train``'s options are generated one to one from
:class:`~mmreward.vision.train.ImageRewardTrainConfig` and :class:`~mmreward.core.trainer.TrainConfig`
and call :func:`~mmreward.vision.train.train_image_reward`, the function a Python user calls.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options


def _load_scorer(path: str):
    from mmreward.vision.image_reward import ImageRewardModel

    from mmreward.core.checkpoint import CheckpointError

    try:
        return ImageRewardModel.from_pretrained(path)
    except CheckpointError as e:
        raise SystemExit(f"mmreward: cannot load the scorer: {e}") from None


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = CLIParser(prog="mmreward score", description="score images against a prompt")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="ImageReward model folder (save_pretrained output)")
    parser.add_argument("--prompt", required=True, help="the text the images should match")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    import torch
    from mmreward.vision.images import ImageLoadError, load_image

    model = _load_scorer(args.model)
    try:
        images = [load_image(p) for p in args.images]
    except ImageLoadError as e:
        print(f"mmreward score: {e}", file=sys.stderr)
        return 2
    with torch.no_grad():
        scores = torch.cat([model.score(args.prompt, images[s:s + args.batch_size])
                            for s in range(0, len(images), args.batch_size)])
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    rank = {i: r + 1 for r, i in enumerate(order)}
    rows = [{"image": p, "score": float(scores[i]), "rank": rank[i]} for i, p in enumerate(args.images)]
    if args.json:
        print(json.dumps({"prompt": args.prompt, "results": rows}, indent=2))
    else:
        width = max(len(p) for p in args.images)
        print(f"prompt: {args.prompt}")
        print(f"{'rank':>4}  {'score':>9}  image")
        for r in sorted(rows, key=lambda r: r["rank"]):
            print(f"{r['rank']:>4}  {r['score']:>9.4f}  {r['image']:<{width}}")
    return 0


def score_video_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = CLIParser(prog="mmreward score-video", description="score a video's frames against a prompt")
    parser.add_argument("video", help="mp4 / gif / … file or a folder of frames")
    parser.add_argument("--model", required=True, help="ImageReward model folder (save_pretrained output)")
    parser.add_argument("--prompt", required=True, help="the text the video should match")
    parser.add_argument("--stride", type=int, default=1, help="score every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="score at most this many frames")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    parser.add_argument("--plot", default=None, help="write a PNG of the score over time here")
    parser.add_argument("--json", action="store_true", help="print JSON (per-frame scores and aggregates)")
    args = parser.parse_args(argv)
    from mmreward.vision.video import VideoReadError, plot_video_score, score_video

    model = _load_scorer(args.model)
    try:
        result = score_video(model, args.prompt, args.video, batch_size=args.batch_size, stride=args.stride,
                             max_frames=args.max_frames)
    except VideoReadError as e:
        print(f"mmreward score-video: {e}", file=sys.stderr)
        return 2
    if args.plot:
        plot_video_score(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"prompt: {result.prompt}\nframes: {len(result.scores)}" + (f" (fps {result.fps:.3g})" if result.fps else ""))
        print(f"mean {result.mean:.4f}  min {result.min:.4f}  max {result.max:.4f}  trend {result.trend:+.4g}/frame")
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _train(argv: Sequence[str]) -> int:
    from mmreward.vision.train import ImageRewardTrainConfig, train_image_reward

    from mmreward.core.trainer import TrainConfig

    parser = CLIParser(prog="mmreward vision train",
                                     description="train an ImageReward-style scorer on ranked image sets")
    add_config_options(parser, ImageRewardTrainConfig)
    add_config_options(parser, TrainConfig)
    args = vars(parser.parse_args(argv))
    try:
        cfg = ImageRewardTrainConfig(**{f.name: args[f.name] for f in fields(ImageRewardTrainConfig)})
        tcfg = TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig)})
        _, history = train_image_reward(cfg, tcfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmreward vision train: {e}", file=sys.stderr)
        return 2
    last = history[-1] if history else {}
    shown = {k: round(v, 4) for k, v in last.items() if k in ("step", "loss") or k.startswith("eval_")}
    print(json.dumps(shown))
    print(f"model: {tcfg.output_dir}/model")
    return 0


def _vlm_commands() -> dict:
    from mmreward.vision.vlm_cli import SUBCOMMANDS as VLM

    return VLM


SUBCOMMANDS = {"train": (_train, "train an image scorer (synthetic shapes or a JSONL of ranked image sets)")}
SUBCOMMANDS.update(_vlm_commands())


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmreward vision <command> [options]\n\ncommands:")
        for name, (_, text) in SUBCOMMANDS.items():
            print(f"  {name:<16} {text}")
        print("\nalso: `mmreward score …` (images) and `mmreward score-video …` (videos)")
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"mmreward vision: unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    return SUBCOMMANDS[argv[0]][0](argv[1:])
