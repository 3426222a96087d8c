"""Throughput of the published vision reward models: mmreward against the official code on the same
weights, CPU, side by side (items / s).

Each model is built at a small but non-trivial size (224 px images, 4-layer towers) by the OFFICIAL
code in the side environment of ``scripts/setup_published_refs.sh`` (tests/vision/published_reference.py),
which also times the official scoring loop: ImageReward's ``ImageReward.score`` per image, HPSv2's
``img_score.score`` per-image body (without its checkpoint re-read per call), PickScore's README call on
the whole list, and Skywork-VL-Reward's ``get_reward`` per conversation. mmreward then loads the same
folder with ``mmreward.load`` and scores the same images at batch size 1 and ``--batch``.

    .venv/bin/python benchmarks/bench_published_vision.py [--images 32] [--batch 32] [--repeat 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from machine_info import machine  # noqa: E402
RUNNER = os.path.join(ROOT, "tests", "vision", "published_reference.py")
PROMPT = "a photo of a cat"
# task -> (runner arguments, how mmreward scores one image)
MODELS = {
    "ImageReward (BLIP)": ("imagereward", {"image_size": 224, "vit_width": 256, "text_width": 128, "depth": 4}),
    "HPSv2 (open_clip)": ("hpsv2", {"image_size": 224, "patch_size": 14, "width": 256, "depth": 4,
                                    "checkpoint": "HPS_v2_compressed.pt"}),
    "PickScore (CLIPModel)": ("clip", {"image_size": 224, "patch_size": 14, "width": 256, "depth": 4}),
    "Skywork-VL-Reward (Qwen2.5-VL)": ("qwen_vl", {"flavour": "qwen2_5_vl", "width": 64, "max_pixels": 224 * 224}),
}


def official(task: str, folder: str, args: dict, side_env: str) -> dict:
    args_path, out = folder + ".args.json", folder + ".out.json"
    with open(args_path, "w") as f:
        json.dump({**args, "folder": folder, "out": out}, f)
    env = {**os.environ, "PYTHONPATH": side_env, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, RUNNER, task, args_path], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"official {task} failed:\n{proc.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)


def items_per_s(model, items, batch_size: int, repeat: int) -> float:
    """Best of ``repeat`` timed runs after a warm-up (the machine may be shared: best-of is the
    least disturbed run, measured the same way on both sides)."""
    model.score(items[:2], batch_size=batch_size)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        model.score(items, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32, help="images scored per model")
    p.add_argument("--batch", type=int, default=32, help="mmreward's batched batch size")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best counts")
    p.add_argument("--side-env", default=os.environ.get("MMREWARD_PUBLISHED_REF") or os.path.join(sys.prefix, "published-ref"))
    p.add_argument("--out", default=None, help="write the table as JSON here")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(args.side_env, "transformers")):
        sys.exit(f"no official packages in {args.side_env}: run `bash scripts/setup_published_refs.sh`")
    import mmreward
    from mmreward.core.inputs import Conversation, ImagePrompt
    from PIL import Image

    if min(args.images, args.batch, args.repeat) < 1:
        p.error("--images, --batch and --repeat must be at least 1")
    machine_before = machine()
    work = tempfile.mkdtemp(prefix="bench_published_")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        h, w = (256, 320) if i % 2 else (300, 240)
        path = os.path.join(work, f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    print(f"CPU, {torch.get_num_threads()} threads, {args.images} images; items/s (higher is better)")
    print(f"{'model':<32} {'official':>9} {'mmreward b=1':>13} {f'mmreward b={args.batch}':>14} {'speed-up':>9}")
    rows = []
    for name, (task, extra) in MODELS.items():
        folder = os.path.join(work, task)
        run_args = {**extra, "images": paths[:2], "prompts": [PROMPT], "bench": paths, "repeat": args.repeat}
        if task == "qwen_vl":
            run_args["conversations"] = []
        ref = official(task, folder, run_args, args.side_env)
        model = mmreward.load(folder)
        if task == "qwen_vl":  # the image is the answer to the prompt, as the official loop scores it
            items = [Conversation([{"role": "user", "content": PROMPT},
                                   {"role": "assistant", "content": [{"type": "image", "image": x}]}]) for x in paths]
        else:
            items = [ImagePrompt(PROMPT, x) for x in paths]
        with torch.no_grad():
            one, batched = items_per_s(model, items, 1, args.repeat), items_per_s(model, items, args.batch, args.repeat)
        row = {"model": name, "official": round(ref["official_items_per_s"], 2), "mmreward_batch_1": round(one, 2),
               f"mmreward_batch_{args.batch}": round(batched, 2),
               "speedup": round(batched / ref["official_items_per_s"], 2)}
        rows.append(row)
        print(f"{name:<32} {row['official']:>9.2f} {one:>13.2f} {batched:>14.2f} {row['speedup']:>8.2f}x")
    if args.out:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.out, json.dumps({"threads": torch.get_num_threads(), "images": args.images,
                                                "machine": machine_before, "load_average_after": machine()["load_average"],
                                                "order": "per model: the official loop (best of --repeat), then mmreward",
                                                "rows": rows}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # the generated images and model folders


if __name__ == "__main__":
    main()
