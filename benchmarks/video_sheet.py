"""Contact sheet of evaluation videos: one row per run, every ``--every``-th frame, to compare what
agents do (e.g. whether they hover in front of the target) side by side.

    python benchmarks/video_sheet.py "λ 0=runs/rl_motion/lam0_seed1/eval_videos/frame_000030000.mp4" \\
        "λ 4=runs/rl_motion/lam4_seed1/eval_videos/frame_000030000.mp4" --every 10 --out sheet.jpg

Rows are labelled on the left; the videos are the annotated mp4s the RL workspace writes (the first
evaluation episode at each evaluation).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def sheet(rows: list[tuple[str, np.ndarray]], every: int, scale: int = 2, label_width: int = 110) -> np.ndarray:
    """``rows``: (label, frames ``[T, H, W, 3]``) → one uint8 image, frames 0, every, 2·every, … per row."""
    from PIL import Image, ImageDraw

    picked = [(label, frames[::every]) for label, frames in rows]
    h, w = picked[0][1].shape[1:3]
    cols = max(len(f) for _, f in picked)
    canvas = Image.new("RGB", (label_width + cols * w * scale, len(picked) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(picked):
        if frames.shape[1:3] != (h, w):
            raise ValueError(f"row {label!r}: frames of {frames.shape[1:3]}, the first row's are {(h, w)}")
        draw.text((4, r * h * scale + h * scale // 2 - 6), label, fill="black")
        for c, frame in enumerate(frames):
            tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_width + c * w * scale, r * h * scale))
    return np.asarray(canvas)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("videos", nargs="+", help="LABEL=VIDEO pairs, one row each")
    p.add_argument("--every", type=int, default=10, help="keep every N-th frame")
    p.add_argument("--scale", type=int, default=2, help="pixel scale of each frame")
    p.add_argument("--out", required=True, help="image file to write (.jpg / .png)")
    args = p.parse_args(argv)
    if args.every < 1 or args.scale < 1:
        p.error("--every and --scale must be >= 1")
    from PIL import Image

    from mmreward.robotics.data.video import read_video

    rows = []
    for pair in args.videos:
        label, sep, path = pair.rpartition("=")
        if not sep or not os.path.isfile(path):
            p.error(f"expected LABEL=VIDEO with an existing video file, got {pair!r}")
        rows.append((label, read_video(path)))
    Image.fromarray(sheet(rows, args.every, args.scale)).save(args.out, quality=90)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
